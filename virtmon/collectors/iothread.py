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
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_iothreads", "gauge",
        help_text("Number of IOThreads", "iothread.count"),
        labels=("domain",), unit="IOThreads",
        source="`iothread.count`"),
    FamilySpec(
        "libvirt_domain_iothread_poll_max_seconds", "gauge",
        help_text("Maximum polling time, in seconds (0: off)", "iothread.<id>.poll-max-ns"),
        labels=("domain", "iothread"), unit="seconds",
        source="`iothread.<id>.poll-max-ns` (ns; 0: polling off)"),
    FamilySpec(
        "libvirt_domain_iothread_poll_grow", "gauge",
        help_text("Polling time growth factor (0: hypervisor default)", "iothread.<id>.poll-grow"),
        labels=("domain", "iothread"), unit="factor",
        source="`iothread.<id>.poll-grow`"),
    FamilySpec(
        "libvirt_domain_iothread_poll_shrink", "gauge",
        help_text("Polling time shrink divisor (0: hypervisor default)",
                  "iothread.<id>.poll-shrink"),
        labels=("domain", "iothread"), unit="divisor",
        source="`iothread.<id>.poll-shrink`"),
)
_FAMILY = by_name(FAMILIES)


class IothreadCollector:
    """IOThread count and each IOThread's poll-max, poll-grow and poll-shrink."""

    name = "iothread"
    stats_groups: ClassVar[tuple[str, ...]] = ("iothread",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families for `iothread.count` and `iothread.<id>.poll-*`."""
        count_family = _FAMILY["libvirt_domain_iothreads"].new()
        families = {
            "poll-max-ns": _FAMILY["libvirt_domain_iothread_poll_max_seconds"].new(),
            "poll-grow": _FAMILY["libvirt_domain_iothread_poll_grow"].new(),
            "poll-shrink": _FAMILY["libvirt_domain_iothread_poll_shrink"].new(),
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
