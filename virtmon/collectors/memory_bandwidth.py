"""Memory bandwidth monitors (resctrl MBM) from libvirt's `memory` group.

Keys `memory.bandwidth.monitor.<num>.node.<index>.bytes.{local,total}`, labelled by the monitor
name and the host memory controller id; the monitor's vCPU list goes on an info metric.

Sample::

    # TYPE libvirt_domain_memory_bandwidth_local_bytes_total counter
    libvirt_domain_memory_bandwidth_local_bytes_total{domain="web-01",monitor="mbm0",node="0"} 4096
    # TYPE libvirt_domain_memory_bandwidth_total_bytes_total counter
    libvirt_domain_memory_bandwidth_total_bytes_total{domain="web-01",monitor="mbm0",node="0"} 8192
    # TYPE libvirt_domain_memory_bandwidth_monitor_info gauge
    libvirt_domain_memory_bandwidth_monitor_info{domain="web-01",monitor="mbm0",vcpus="0-1"} 1
"""

from __future__ import annotations

from typing import ClassVar

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

_PREFIX = "memory.bandwidth.monitor."


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_memory_bandwidth_local_bytes_total", "counter",
        help_text("Bytes the monitor's vCPUs moved through the local memory controller",
                  "memory.bandwidth.monitor.<num>.node.<index>.bytes.local"),
        labels=("domain", "monitor", "node"), unit="bytes",
        source="`memory.bandwidth.monitor.<n>.node.<i>.bytes.local` (resctrl MBM)"),
    FamilySpec(
        "libvirt_domain_memory_bandwidth_total_bytes_total", "counter",
        help_text("Bytes the monitor's vCPUs moved through all memory controllers",
                  "memory.bandwidth.monitor.<num>.node.<index>.bytes.total"),
        labels=("domain", "monitor", "node"), unit="bytes",
        source="`memory.bandwidth.monitor.<n>.node.<i>.bytes.total` (resctrl MBM)"),
    FamilySpec(
        "libvirt_domain_memory_bandwidth_monitor_info", "info",
        help_text("Memory bandwidth monitor and its vCPU list",
                  "memory.bandwidth.monitor.<num>.vcpus"),
        labels=("domain", "monitor", "vcpus"), unit="info",
        source="`memory.bandwidth.monitor.<n>.vcpus`"),
)
_FAMILY = by_name(FAMILIES)


class MemoryBandwidthCollector:
    """Bytes through local and all memory controllers per bandwidth monitor."""

    name = "memory_bandwidth"
    stats_groups: ClassVar[tuple[str, ...]] = ("memory",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Two counters per monitor and controller, and the monitor info metric."""
        local = _FAMILY["libvirt_domain_memory_bandwidth_local_bytes_total"].new()
        total = _FAMILY["libvirt_domain_memory_bandwidth_total_bytes_total"].new()
        info = _FAMILY["libvirt_domain_memory_bandwidth_monitor_info"].new()
        for record in snapshot.domains:
            stats = record.stats
            monitors = stats.get(_PREFIX + "count")
            if not monitors:
                continue
            domain = record.name
            for num in range(monitors):
                prefix = f"{_PREFIX}{num}."
                monitor = str(stats.get(prefix + "name") or f"monitor{num}")
                info.add((domain, monitor, str(stats.get(prefix + "vcpus", ""))), 1)
                for index in range(stats.get(prefix + "node.count", 0)):
                    node_prefix = f"{prefix}node.{index}."
                    labels = (domain, monitor, str(stats.get(node_prefix + "id", index)))
                    value = stats.get(node_prefix + "bytes.local")
                    if value is not None:
                        local.add(labels, value)
                    value = stats.get(node_prefix + "bytes.total")
                    if value is not None:
                        total.add(labels, value)
        return [local, total, info]
