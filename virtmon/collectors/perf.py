"""Domain perf event counts from the `perf` group (`perf.<event>`).

Only events enabled in the domain's `<perf>` element are reported. Counts become
`libvirt_domain_perf_<event>_total`; the clock events count nanoseconds and become seconds; the
three resctrl figures (cmt, mbmt, mbml) are gauges in bytes and bytes per second.

Sample::

    # TYPE libvirt_domain_perf_instructions_total counter
    libvirt_domain_perf_instructions_total{domain="web-01"} 918273645
    # TYPE libvirt_domain_perf_task_clock_seconds_total counter
    libvirt_domain_perf_task_clock_seconds_total{domain="web-01"} 12.5
    # TYPE libvirt_domain_perf_cmt_bytes gauge
    libvirt_domain_perf_cmt_bytes{domain="web-01"} 1048576
"""

from __future__ import annotations

from typing import ClassVar

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import MetricFamily, MetricType

_COUNTS = (
    "cache_misses",
    "cache_references",
    "instructions",
    "cpu_cycles",
    "branch_instructions",
    "branch_misses",
    "bus_cycles",
    "stalled_cycles_frontend",
    "stalled_cycles_backend",
    "ref_cpu_cycles",
    "page_faults",
    "context_switches",
    "cpu_migrations",
    "page_faults_min",
    "page_faults_maj",
    "alignment_faults",
    "emulation_faults",
)

# (event, metric, type, divisor, description)
_SPECS: tuple[tuple[str, str, MetricType, float, str], ...] = (
    (
        "cmt",
        "libvirt_domain_perf_cmt_bytes",
        "gauge",
        1,
        "Last-level cache used by the domain (cmt perf event), in bytes",
    ),
    (
        "mbmt",
        "libvirt_domain_perf_mbmt_bytes_per_second",
        "gauge",
        1,
        "Total memory bandwidth between cache levels (mbmt perf event), in bytes per second",
    ),
    (
        "mbml",
        "libvirt_domain_perf_mbml_bytes_per_second",
        "gauge",
        1,
        "Memory bandwidth through the local memory controller (mbml perf event), bytes/s",
    ),
    (
        "cpu_clock",
        "libvirt_domain_perf_cpu_clock_seconds_total",
        "counter",
        1e9,
        "CPU clock time (cpu_clock perf event), in seconds",
    ),
    (
        "task_clock",
        "libvirt_domain_perf_task_clock_seconds_total",
        "counter",
        1e9,
        "Task clock time (task_clock perf event), in seconds",
    ),
    *(
        (
            event,
            f"libvirt_domain_perf_{event}_total",
            "counter",
            1,
            f"Count of the {event} perf event",
        )
        for event in _COUNTS
    ),
)


class PerfCollector:
    """One family per libvirt perf event."""

    name = "perf"
    stats_groups: ClassVar[tuple[str, ...]] = ("perf",)

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families for every `perf.<event>` key present."""
        specs = [
            (
                "perf." + event,
                scale,
                MetricFamily(metric, kind, help_text(what, "perf." + event), ("domain",)),
            )
            for event, metric, kind, scale, what in _SPECS
        ]
        for record in snapshot.domains:
            stats = record.stats
            if not any(key.startswith("perf.") for key in stats):
                continue
            labels = (record.name,)
            for key, scale, family in specs:
                value = stats.get(key)
                if value is not None:
                    family.add(labels, value if scale == 1 else value / scale)
        return [family for _, _, family in specs]
