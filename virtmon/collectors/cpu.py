"""Domain CPU time from the `cpu_total` group (`cpu.*`, nanoseconds converted to seconds), for
domains that run: an inactive domain's `cpu.*` are libvirtd's own (see `CpuCollector.collect`).

Sample::

    # TYPE libvirt_domain_info_cpu_time_seconds_total counter
    libvirt_domain_info_cpu_time_seconds_total{domain="web-01"} 486.629513
    # TYPE libvirt_domain_cpu_user_seconds_total counter
    libvirt_domain_cpu_user_seconds_total{domain="web-01"} 368.672472
    # TYPE libvirt_domain_cpu_haltpoll_success_seconds_total counter
    libvirt_domain_cpu_haltpoll_success_seconds_total{domain="web-01"} 1.057833298
    # TYPE libvirt_domain_cpu_cache_monitor_bytes gauge
    libvirt_domain_cpu_cache_monitor_bytes{domain="web-01",monitor="mon0",bank="0"} 4505600
"""

from __future__ import annotations

from typing import ClassVar

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.collectors.state import is_inactive
from virtmon.exposition.family import MetricFamily

_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("cpu.time", "libvirt_domain_info_cpu_time_seconds_total", "Total CPU time of the domain"),
    ("cpu.user", "libvirt_domain_cpu_user_seconds_total", "User CPU time of the domain"),
    ("cpu.system", "libvirt_domain_cpu_system_seconds_total", "System CPU time of the domain"),
    (
        "cpu.haltpoll.success.time",
        "libvirt_domain_cpu_haltpoll_success_seconds_total",
        "CPU time spent halt-polling until a virtual interrupt arrived",
    ),
    (
        "cpu.haltpoll.fail.time",
        "libvirt_domain_cpu_haltpoll_fail_seconds_total",
        "CPU time spent halt-polling before scheduling out",
    ),
)


class CpuCollector:
    """Domain CPU counters in seconds and the cache-monitor occupancy in bytes."""

    name = "cpu"
    stats_groups: ClassVar[tuple[str, ...]] = ("cpu_total",)

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """One counter per `cpu.*` time key plus `cpu.cache.monitor.*` bytes."""
        pairs = [
            (
                key,
                MetricFamily(metric, "counter", help_text(f"{what}, in seconds", key), ("domain",)),
            )
            for key, metric, what in _COUNTERS
        ]
        cache = MetricFamily(
            "libvirt_domain_cpu_cache_monitor_bytes",
            "gauge",
            help_text(
                "Last-level cache used by the vCPUs of a cache monitor on one bank, in bytes",
                "cpu.cache.monitor.<num>.bank.<index>.bytes",
            ),
            ("domain", "monitor", "bank"),
        )
        for record in snapshot.domains:
            stats = record.stats
            if is_inactive(stats):
                # libvirt 9.0 fills cpu_total of a shut-off domain from libvirtd's own
                # /proc/self/stat: not the domain's time, and it would make rate() show a
                # stopped domain using CPU.
                continue
            labels = (record.name,)
            for key, family in pairs:
                value = stats.get(key)
                if value is not None:
                    family.add(labels, value / 1e9)
            monitors = stats.get("cpu.cache.monitor.count")
            if monitors:
                for num in range(monitors):
                    prefix = f"cpu.cache.monitor.{num}."
                    monitor = str(stats.get(prefix + "name", num))
                    for index in range(stats.get(prefix + "bank.count", 0)):
                        value = stats.get(f"{prefix}bank.{index}.bytes")
                        if value is not None:
                            bank = str(stats.get(f"{prefix}bank.{index}.id", index))
                            cache.add((record.name, monitor, bank), value)
        return [family for _, family in pairs] + [cache]
