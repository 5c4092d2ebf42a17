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

from virtmon.collectors.base import KeyedFamilies, help_text, ns_to_seconds
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.collectors.state import is_inactive
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

# (libvirt key, metric); HELP, unit and source are in FAMILIES
_COUNTERS: tuple[tuple[str, str], ...] = (
    ("cpu.time", "libvirt_domain_info_cpu_time_seconds_total"),
    ("cpu.user", "libvirt_domain_cpu_user_seconds_total"),
    ("cpu.system", "libvirt_domain_cpu_system_seconds_total"),
    ("cpu.haltpoll.success.time", "libvirt_domain_cpu_haltpoll_success_seconds_total"),
    ("cpu.haltpoll.fail.time", "libvirt_domain_cpu_haltpoll_fail_seconds_total"),
)


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_info_cpu_time_seconds_total", "counter",
        help_text("Total CPU time of the domain, in seconds", "cpu.time"),
        labels=("domain",), unit="seconds",
        source="`cpu.time` (ns)"),
    FamilySpec(
        "libvirt_domain_cpu_user_seconds_total", "counter",
        help_text("User CPU time of the domain, in seconds", "cpu.user"),
        labels=("domain",), unit="seconds",
        source="`cpu.user` (ns)"),
    FamilySpec(
        "libvirt_domain_cpu_system_seconds_total", "counter",
        help_text("System CPU time of the domain, in seconds", "cpu.system"),
        labels=("domain",), unit="seconds",
        source="`cpu.system` (ns)"),
    FamilySpec(
        "libvirt_domain_cpu_haltpoll_success_seconds_total", "counter",
        help_text("CPU time spent halt-polling until a virtual interrupt arrived, in seconds",
                  "cpu.haltpoll.success.time"),
        labels=("domain",), unit="seconds",
        source="`cpu.haltpoll.success.time` (ns)"),
    FamilySpec(
        "libvirt_domain_cpu_haltpoll_fail_seconds_total", "counter",
        help_text("CPU time spent halt-polling before scheduling out, in seconds",
                  "cpu.haltpoll.fail.time"),
        labels=("domain",), unit="seconds",
        source="`cpu.haltpoll.fail.time` (ns)"),
    FamilySpec(
        "libvirt_domain_cpu_cache_monitor_bytes", "gauge",
        help_text("Last-level cache used by the vCPUs of a cache monitor on one bank, in bytes",
                  "cpu.cache.monitor.<num>.bank.<index>.bytes"),
        labels=("domain", "monitor", "bank"), unit="bytes",
        source="`cpu.cache.monitor.<n>.bank.<i>.bytes` (resctrl)"),
)
_FAMILY = by_name(FAMILIES)


class CpuCollector:
    """Domain CPU counters in seconds and the cache-monitor occupancy in bytes."""

    name = "cpu"
    stats_groups: ClassVar[tuple[str, ...]] = ("cpu_total",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """One counter per `cpu.*` time key plus `cpu.cache.monitor.*` bytes."""
        counters = KeyedFamilies((key, _FAMILY[metric], ns_to_seconds) for key, metric in _COUNTERS)
        cache = _FAMILY["libvirt_domain_cpu_cache_monitor_bytes"].new()
        for record in snapshot.domains:
            stats = record.stats
            if is_inactive(stats):
                # libvirt 9.0 fills cpu_total of a shut-off domain from libvirtd's own
                # /proc/self/stat: not the domain's time, and it would make rate() show a
                # stopped domain using CPU.
                continue
            counters.add(stats, (record.name,))
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
        return [*counters.families, cache]
