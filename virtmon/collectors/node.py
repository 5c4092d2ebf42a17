"""Host statistics: virNodeGetInfo, CPU and memory statistics, free pages, KSM, CPU map.

Per-CPU and per-NUMA-cell figures carry `cpu` / `numa_node` labels; the host-wide figures
(`getCPUStats(-1)`, `getMemoryStats(-1)`) go to separate `..._all_...` families so that summing
over a label never double-counts.

Sample::

    # TYPE libvirt_node_info gauge
    libvirt_node_info{model="x86_64",numa_nodes="1",sockets="1",cores="2",threads="1"} 1
    # TYPE libvirt_node_cpus gauge
    libvirt_node_cpus 2
    # TYPE libvirt_node_cpu_seconds_total counter
    libvirt_node_cpu_seconds_total{cpu="0",mode="user"} 1234.5
    # TYPE libvirt_node_cpu_all_seconds_total counter
    libvirt_node_cpu_all_seconds_total{mode="user"} 2469.0
    # TYPE libvirt_node_memory_free_bytes gauge
    libvirt_node_memory_free_bytes{numa_node="0"} 2147483648
    # TYPE libvirt_node_free_pages gauge
    libvirt_node_free_pages{numa_node="0",page_size_bytes="2097152"} 0
    # TYPE libvirt_node_memory_shared_pages_sharing gauge
    libvirt_node_memory_shared_pages_sharing 0
"""

from __future__ import annotations

from typing import ClassVar

from virtmon.collectors.base import NoData, help_text
from virtmon.collectors.snapshot import NodeStats, StatsSnapshot
from virtmon.exposition.family import MetricFamily, MetricType

_MEMORY_FIELDS = ("total", "free", "buffers", "cached")

# KSM parameter -> (metric suffix, type, divisor, description)
_KSM: dict[str, tuple[str, MetricType, float, str]] = {
    "shm_pages_to_scan": ("pages_to_scan", "gauge", 1, "Pages KSM scans before sleeping"),
    "shm_sleep_millisecs": ("sleep_seconds", "gauge", 1000, "KSM sleep between scans, seconds"),
    "shm_pages_shared": ("pages_shared", "gauge", 1, "Shared pages in use"),
    "shm_pages_sharing": ("pages_sharing", "gauge", 1, "Sites sharing the shared pages"),
    "shm_pages_unshared": ("pages_unshared", "gauge", 1, "Pages unique but checked for merging"),
    "shm_pages_volatile": ("pages_volatile", "gauge", 1, "Pages changing too fast to merge"),
    "shm_full_scans": ("full_scans_total", "counter", 1, "Times all mergeable areas were scanned"),
    "shm_merge_across_nodes": (
        "merge_across_nodes",
        "gauge",
        1,
        "1 if pages from different NUMA nodes can be merged",
    ),
}


def _gauge(name: str, what: str, source: str, labels: tuple[str, ...] = (),
           fact: bool = False) -> MetricFamily:
    return MetricFamily(name, "gauge", help_text(what, source, fact), labels)


class NodeCollector:
    """Host CPU, memory, free pages, KSM parameters and CPU map."""

    name = "node"
    stats_groups: ClassVar[tuple[str, ...]] = ()

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families from `snapshot.node`; `NoData` when node statistics were not taken."""
        node = snapshot.node
        if node is None:
            raise NoData("no node statistics in this snapshot")
        return [
            *self._info(node),
            *self._cpu(node),
            *self._memory(node),
            *self._ksm(node),
        ]

    def _info(self, node: NodeStats) -> list[MetricFamily]:
        if node.info is None:
            return []
        # libvirt-python's getInfo() gives memory in MiB (the C struct's KiB, divided).
        model, memory_mib, cpus, mhz, numa_nodes, sockets, cores, threads = node.info[:8]
        info = MetricFamily(
            "libvirt_node_info",
            "info",
            help_text("Host CPU model and topology", "virNodeGetInfo", fact=True),
            ("model", "numa_nodes", "sockets", "cores", "threads"),
        )
        info.add((str(model), str(numa_nodes), str(sockets), str(cores), str(threads)), 1)
        cpu_count = _gauge("libvirt_node_cpus", "Number of active host CPUs", "virNodeGetInfo cpus",
                           fact=True)
        cpu_count.add((), cpus)
        memory = _gauge(
            "libvirt_node_memory_bytes", "Host memory, in bytes", "virNodeGetInfo memory",
            fact=True,
        )
        memory.add((), memory_mib * 1024 * 1024)
        freq = _gauge(
            "libvirt_node_cpu_frequency_hertz",
            "Expected host CPU frequency, in hertz",
            "virNodeGetInfo mhz",
            fact=True,
        )
        freq.add((), mhz * 1_000_000)
        return [info, cpu_count, memory, freq]

    def _cpu(self, node: NodeStats) -> list[MetricFamily]:
        per_cpu = MetricFamily(
            "libvirt_node_cpu_seconds_total",
            "counter",
            help_text("Host CPU time per CPU and mode, in seconds", "virNodeGetCPUStats(cpu)"),
            ("cpu", "mode"),
        )
        for cpu in sorted(node.cpu_per_cpu):
            for mode, value in node.cpu_per_cpu[cpu].items():
                per_cpu.add((str(cpu), mode), value / 1e9)
        total = MetricFamily(
            "libvirt_node_cpu_all_seconds_total",
            "counter",
            help_text("Host CPU time of all CPUs per mode, in seconds", "virNodeGetCPUStats(-1)"),
            ("mode",),
        )
        for mode, value in (node.cpu_total or {}).items():
            total.add((mode,), value / 1e9)
        online = _gauge(
            "libvirt_node_cpu_online",
            "1 if the host CPU is online, else 0",
            "virNodeGetCPUMap",
            ("cpu",),
            fact=True,
        )
        for cpu, flag in enumerate(node.cpu_map or ()):
            online.add((str(cpu),), 1 if flag else 0)
        return [per_cpu, total, online]

    def _memory(self, node: NodeStats) -> list[MetricFamily]:
        families: list[MetricFamily] = []
        for field in _MEMORY_FIELDS:
            per_cell = _gauge(
                f"libvirt_node_memory_{field}_bytes",
                f"Host memory {field} per NUMA cell, in bytes",
                f"virNodeGetMemoryStats(cell) {field}",
                ("numa_node",),
            )
            for cell in sorted(node.memory_per_cell):
                value = node.memory_per_cell[cell].get(field)
                if value is not None:
                    per_cell.add((str(cell),), value * 1024)
            whole = _gauge(
                f"libvirt_node_memory_all_{field}_bytes",
                f"Host memory {field} of all cells, in bytes",
                f"virNodeGetMemoryStats(-1) {field}",
            )
            value = (node.memory_total or {}).get(field)
            if value is not None:
                whole.add((), value * 1024)
            families += [per_cell, whole]
        pages = _gauge(
            "libvirt_node_free_pages",
            "Free pages per NUMA cell and page size",
            "virNodeGetFreePages",
            ("numa_node", "page_size_bytes"),
        )
        for cell in sorted(node.free_pages):
            sizes = node.free_pages[cell]
            for size in sorted(sizes):
                pages.add((str(cell), str(size * 1024)), sizes[size])
        families.append(pages)
        return families

    def _ksm(self, node: NodeStats) -> list[MetricFamily]:
        families: list[MetricFamily] = []
        for key in sorted(node.memory_parameters):
            value = node.memory_parameters[key]
            if key in _KSM:
                suffix, kind, scale, what = _KSM[key]
            elif key.startswith("shm_"):
                suffix, kind, scale, what = key[4:], "gauge", 1, f"KSM parameter {key}"
            else:
                continue
            family = MetricFamily(
                f"libvirt_node_memory_shared_{suffix}",
                kind,
                help_text(what, f"virNodeGetMemoryParameters {key}"),
            )
            family.add((), value if scale == 1 else value / scale)
            families.append(family)
        return families
