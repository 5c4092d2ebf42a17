"""IOThread polling parameters from the `iothread` group (`iothread.<id>.*`).

The `iothread` label is the IOThread id (not a dense index). `poll-max-ns` is converted to
seconds (METRICS.md's base-unit rule wins over the catalogue's `poll_max_ns` spelling).

Sample::

    # TYPE libvirt_domain_iothreads gauge
    libvirt_domain_iothreads{domain="web-01"} 1
    # TYPE libvirt_domain_iothread_poll_max_seconds gauge
    libvirt_domain_iothread_poll_max_seconds{domain="web-01",iothread="1"} 3.2e-05
    # TYPE libvirt_domain_iothread_poll_grow gauge
    libvirt_domain_iothread_poll_grow{domain="web-01",iothread="1"} 0
"""

from __future__ import annotations

from typing import ClassVar

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import MetricFamily


class IothreadCollector:
    """IOThread count and each IOThread's poll-max, poll-grow and poll-shrink."""

    name = "iothread"
    stats_groups: ClassVar[tuple[str, ...]] = ("iothread",)

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families for `iothread.count` and `iothread.<id>.poll-*`."""
        il = ("domain", "iothread")
        count_family = MetricFamily(
            "libvirt_domain_iothreads",
            "gauge",
            help_text("Number of IOThreads", "iothread.count"),
            ("domain",),
        )
        families = {
            "poll-max-ns": MetricFamily(
                "libvirt_domain_iothread_poll_max_seconds",
                "gauge",
                help_text("Maximum polling time, in seconds (0: off)", "iothread.<id>.poll-max-ns"),
                il,
            ),
            "poll-grow": MetricFamily(
                "libvirt_domain_iothread_poll_grow",
                "gauge",
                help_text(
                    "Polling time growth factor (0: hypervisor default)", "iothread.<id>.poll-grow"
                ),
                il,
            ),
            "poll-shrink": MetricFamily(
                "libvirt_domain_iothread_poll_shrink",
                "gauge",
                help_text(
                    "Polling time shrink divisor (0: hypervisor default)",
                    "iothread.<id>.poll-shrink",
                ),
                il,
            ),
        }
        for record in snapshot.domains:
            stats = record.stats
            count = stats.get("iothread.count")
            if count is None:
                continue
            count_family.add((record.name,), count)
            if not count:
                continue
            for key, value in stats.items():
                if not key.startswith("iothread.") or key == "iothread.count":
                    continue
                _, ident, field = key.split(".", 2)
                family = families.get(field)
                if family is not None:
                    family.add(
                        (record.name, ident), value / 1e9 if field == "poll-max-ns" else value
                    )
        return [count_family, *families.values()]
