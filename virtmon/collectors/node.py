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
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

_MEMORY_FIELDS = ("total", "free", "buffers", "cached")

# KSM parameter (virNodeGetMemoryParameters) -> (metric, divisor); HELP, unit and source are in
# FAMILIES. Parameters libvirt adds later are not exported until they are declared here.
_KSM: dict[str, tuple[str, float]] = {
    "shm_pages_to_scan": ("libvirt_node_memory_shared_pages_to_scan", 1),
    "shm_sleep_millisecs": ("libvirt_node_memory_shared_sleep_seconds", 1000),
    "shm_pages_shared": ("libvirt_node_memory_shared_pages_shared", 1),
    "shm_pages_sharing": ("libvirt_node_memory_shared_pages_sharing", 1),
    "shm_pages_unshared": ("libvirt_node_memory_shared_pages_unshared", 1),
    "shm_pages_volatile": ("libvirt_node_memory_shared_pages_volatile", 1),
    "shm_full_scans": ("libvirt_node_memory_shared_full_scans_total", 1),
    "shm_merge_across_nodes": ("libvirt_node_memory_shared_merge_across_nodes", 1),
}


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_node_info", "info",
        help_text("Host CPU model and topology", "virNodeGetInfo", fact=True),
        labels=("model", "numa_nodes", "sockets", "cores", "threads"), unit="info",
        source="virNodeGetInfo (model is the machine architecture on Linux); a fact"),
    FamilySpec(
        "libvirt_node_cpus", "gauge",
        help_text("Number of active host CPUs", "virNodeGetInfo cpus", fact=True),
        labels=(), unit="CPUs",
        source="virNodeGetInfo cpus (active CPUs); a fact"),
    FamilySpec(
        "libvirt_node_memory_bytes", "gauge",
        help_text("Host memory, in bytes", "virNodeGetInfo memory", fact=True),
        labels=(), unit="bytes",
        source="virNodeGetInfo memory (libvirt-python gives whole MiB: MemTotal rounded down); "
               "a fact"),
    FamilySpec(
        "libvirt_node_cpu_frequency_hertz", "gauge",
        help_text("Expected host CPU frequency, in hertz", "virNodeGetInfo mhz", fact=True),
        labels=(), unit="hertz",
        source="virNodeGetInfo mhz; a fact"),
    FamilySpec(
        "libvirt_node_cpu_seconds_total", "counter",
        help_text("Host CPU time per CPU and mode, in seconds", "virNodeGetCPUStats(cpu)"),
        labels=("cpu", "mode"), unit="seconds",
        source="virNodeGetCPUStats(cpu) (ns), for each online CPU by its own number"),
    FamilySpec(
        "libvirt_node_cpu_all_seconds_total", "counter",
        help_text("Host CPU time of all CPUs per mode, in seconds", "virNodeGetCPUStats(-1)"),
        labels=("mode",), unit="seconds",
        source="virNodeGetCPUStats(-1) (ns)"),
    FamilySpec(
        "libvirt_node_cpu_online", "gauge",
        help_text("1 if the host CPU is online, else 0", "virNodeGetCPUMap", fact=True),
        labels=("cpu",), unit="1 or 0",
        source="virNodeGetCPUMap; a fact"),
    FamilySpec(
        "libvirt_node_memory_total_bytes", "gauge",
        help_text("Host memory total per NUMA cell, in bytes", "virNodeGetMemoryStats(cell) total"),
        labels=("numa_node",), unit="bytes",
        source="virNodeGetMemoryStats(cell) total (KiB)"),
    FamilySpec(
        "libvirt_node_memory_all_total_bytes", "gauge",
        help_text("Host memory total of all cells, in bytes", "virNodeGetMemoryStats(-1) total"),
        labels=(), unit="bytes",
        source="virNodeGetMemoryStats(-1) total (KiB): MemTotal"),
    FamilySpec(
        "libvirt_node_memory_free_bytes", "gauge",
        help_text("Host memory free per NUMA cell, in bytes", "virNodeGetMemoryStats(cell) free"),
        labels=("numa_node",), unit="bytes",
        source="virNodeGetMemoryStats(cell) free (KiB)"),
    FamilySpec(
        "libvirt_node_memory_all_free_bytes", "gauge",
        help_text("Host memory free of all cells, in bytes", "virNodeGetMemoryStats(-1) free"),
        labels=(), unit="bytes",
        source="virNodeGetMemoryStats(-1) free (KiB): MemFree (libvirt 9.0 does not add buffers "
               "and cache as its documentation says)"),
    FamilySpec(
        "libvirt_node_memory_buffers_bytes", "gauge",
        help_text("Host memory buffers per NUMA cell, in bytes",
                  "virNodeGetMemoryStats(cell) buffers"),
        labels=("numa_node",), unit="bytes",
        source="virNodeGetMemoryStats(cell) buffers (KiB; Linux gives it for all cells only, so "
               "absent there)"),
    FamilySpec(
        "libvirt_node_memory_all_buffers_bytes", "gauge",
        help_text("Host memory buffers of all cells, in bytes",
                  "virNodeGetMemoryStats(-1) buffers"),
        labels=(), unit="bytes",
        source="virNodeGetMemoryStats(-1) buffers (KiB)"),
    FamilySpec(
        "libvirt_node_memory_cached_bytes", "gauge",
        help_text("Host memory cached per NUMA cell, in bytes",
                  "virNodeGetMemoryStats(cell) cached"),
        labels=("numa_node",), unit="bytes",
        source="virNodeGetMemoryStats(cell) cached (KiB; as buffers)"),
    FamilySpec(
        "libvirt_node_memory_all_cached_bytes", "gauge",
        help_text("Host memory cached of all cells, in bytes", "virNodeGetMemoryStats(-1) cached"),
        labels=(), unit="bytes",
        source="virNodeGetMemoryStats(-1) cached (KiB)"),
    FamilySpec(
        "libvirt_node_free_pages", "gauge",
        help_text("Free pages per NUMA cell and page size", "virNodeGetFreePages"),
        labels=("numa_node", "page_size_bytes"), unit="pages",
        source="virNodeGetFreePages for the base page, 2 MiB and 1 GiB sizes the host has"),
    FamilySpec(
        "libvirt_node_memory_shared_full_scans_total", "counter",
        help_text("Times all mergeable areas were scanned",
                  "virNodeGetMemoryParameters shm_full_scans"),
        labels=(), unit="scans",
        source="shm_full_scans"),
    FamilySpec(
        "libvirt_node_memory_shared_merge_across_nodes", "gauge",
        help_text("1 if pages from different NUMA nodes can be merged",
                  "virNodeGetMemoryParameters shm_merge_across_nodes"),
        labels=(), unit="1 or 0",
        source="shm_merge_across_nodes"),
    FamilySpec(
        "libvirt_node_memory_shared_pages_shared", "gauge",
        help_text("Shared pages in use", "virNodeGetMemoryParameters shm_pages_shared"),
        labels=(), unit="pages",
        source="shm_pages_shared"),
    FamilySpec(
        "libvirt_node_memory_shared_pages_sharing", "gauge",
        help_text("Sites sharing the shared pages", "virNodeGetMemoryParameters shm_pages_sharing"),
        labels=(), unit="pages",
        source="shm_pages_sharing"),
    FamilySpec(
        "libvirt_node_memory_shared_pages_to_scan", "gauge",
        help_text("Pages KSM scans before sleeping",
                  "virNodeGetMemoryParameters shm_pages_to_scan"),
        labels=(), unit="pages",
        source="virNodeGetMemoryParameters shm_pages_to_scan (KSM)"),
    FamilySpec(
        "libvirt_node_memory_shared_pages_unshared", "gauge",
        help_text("Pages unique but checked for merging",
                  "virNodeGetMemoryParameters shm_pages_unshared"),
        labels=(), unit="pages",
        source="shm_pages_unshared"),
    FamilySpec(
        "libvirt_node_memory_shared_pages_volatile", "gauge",
        help_text("Pages changing too fast to merge",
                  "virNodeGetMemoryParameters shm_pages_volatile"),
        labels=(), unit="pages",
        source="shm_pages_volatile"),
    FamilySpec(
        "libvirt_node_memory_shared_sleep_seconds", "gauge",
        help_text("KSM sleep between scans, seconds",
                  "virNodeGetMemoryParameters shm_sleep_millisecs"),
        labels=(), unit="seconds",
        source="shm_sleep_millisecs (ms)"),
)
_FAMILY = by_name(FAMILIES)


class NodeCollector:
    """Host CPU, memory, free pages, KSM parameters and CPU map."""

    name = "node"
    stats_groups: ClassVar[tuple[str, ...]] = ()
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

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
        info = _FAMILY["libvirt_node_info"].new()
        info.add((str(model), str(numa_nodes), str(sockets), str(cores), str(threads)), 1)
        cpu_count = _FAMILY["libvirt_node_cpus"].new()
        cpu_count.add((), cpus)
        memory = _FAMILY["libvirt_node_memory_bytes"].new()
        memory.add((), memory_mib * 1024 * 1024)
        freq = _FAMILY["libvirt_node_cpu_frequency_hertz"].new()
        freq.add((), mhz * 1_000_000)
        return [info, cpu_count, memory, freq]

    def _cpu(self, node: NodeStats) -> list[MetricFamily]:
        per_cpu = _FAMILY["libvirt_node_cpu_seconds_total"].new()
        for cpu in sorted(node.cpu_per_cpu):
            for mode, value in node.cpu_per_cpu[cpu].items():
                per_cpu.add((str(cpu), mode), value / 1e9)
        total = _FAMILY["libvirt_node_cpu_all_seconds_total"].new()
        for mode, value in (node.cpu_total or {}).items():
            total.add((mode,), value / 1e9)
        online = _FAMILY["libvirt_node_cpu_online"].new()
        for cpu, flag in enumerate(node.cpu_map or ()):
            online.add((str(cpu),), 1 if flag else 0)
        return [per_cpu, total, online]

    def _memory(self, node: NodeStats) -> list[MetricFamily]:
        families: list[MetricFamily] = []
        for field in _MEMORY_FIELDS:
            per_cell = _FAMILY[f"libvirt_node_memory_{field}_bytes"].new()
            for cell in sorted(node.memory_per_cell):
                value = node.memory_per_cell[cell].get(field)
                if value is not None:
                    per_cell.add((str(cell),), value * 1024)
            whole = _FAMILY[f"libvirt_node_memory_all_{field}_bytes"].new()
            value = (node.memory_total or {}).get(field)
            if value is not None:
                whole.add((), value * 1024)
            families += [per_cell, whole]
        pages = _FAMILY["libvirt_node_free_pages"].new()
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
            if key not in _KSM:
                continue
            metric, scale = _KSM[key]
            family = _FAMILY[metric].new()
            family.add((), value if scale == 1 else value / scale)
            families.append(family)
        return families
