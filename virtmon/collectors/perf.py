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

from collections.abc import Callable
from typing import ClassVar

from virtmon.collectors.base import KeyedFamilies, help_text, ns_to_seconds
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

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

# (event, metric, conversion or None); HELP, unit and source are in FAMILIES
_SPECS: tuple[tuple[str, str, Callable[[int], float] | None], ...] = (
    ("cmt", "libvirt_domain_perf_cmt_bytes", None),
    ("mbmt", "libvirt_domain_perf_mbmt_bytes_per_second", None),
    ("mbml", "libvirt_domain_perf_mbml_bytes_per_second", None),
    ("cpu_clock", "libvirt_domain_perf_cpu_clock_seconds_total", ns_to_seconds),
    ("task_clock", "libvirt_domain_perf_task_clock_seconds_total", ns_to_seconds),
    *((event, f"libvirt_domain_perf_{event}_total", None) for event in _COUNTS),
)


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_perf_cmt_bytes", "gauge",
        help_text("Last-level cache used by the domain (cmt perf event), in bytes", "perf.cmt"),
        labels=("domain",), unit="bytes",
        source="`perf.cmt` (resctrl)"),
    FamilySpec(
        "libvirt_domain_perf_mbmt_bytes_per_second", "gauge",
        help_text("Total memory bandwidth between cache levels (mbmt perf event), in bytes per "
                  "second", "perf.mbmt"),
        labels=("domain",), unit="bytes/s",
        source="`perf.mbmt` (resctrl)"),
    FamilySpec(
        "libvirt_domain_perf_mbml_bytes_per_second", "gauge",
        help_text("Memory bandwidth through the local memory controller (mbml perf event), "
                  "bytes/s", "perf.mbml"),
        labels=("domain",), unit="bytes/s",
        source="`perf.mbml` (resctrl)"),
    FamilySpec(
        "libvirt_domain_perf_cpu_clock_seconds_total", "counter",
        help_text("CPU clock time (cpu_clock perf event), in seconds", "perf.cpu_clock"),
        labels=("domain",), unit="seconds",
        source="`perf.cpu_clock` (ns)"),
    FamilySpec(
        "libvirt_domain_perf_task_clock_seconds_total", "counter",
        help_text("Task clock time (task_clock perf event), in seconds", "perf.task_clock"),
        labels=("domain",), unit="seconds",
        source="`perf.task_clock` (ns)"),
    FamilySpec(
        "libvirt_domain_perf_cache_misses_total", "counter",
        help_text("Count of the cache_misses perf event", "perf.cache_misses"),
        labels=("domain",), unit="events",
        source="`perf.cache_misses` (PMU)"),
    FamilySpec(
        "libvirt_domain_perf_cache_references_total", "counter",
        help_text("Count of the cache_references perf event", "perf.cache_references"),
        labels=("domain",), unit="events",
        source="`perf.cache_references` (PMU)"),
    FamilySpec(
        "libvirt_domain_perf_instructions_total", "counter",
        help_text("Count of the instructions perf event", "perf.instructions"),
        labels=("domain",), unit="events",
        source="`perf.instructions` (PMU)"),
    FamilySpec(
        "libvirt_domain_perf_cpu_cycles_total", "counter",
        help_text("Count of the cpu_cycles perf event", "perf.cpu_cycles"),
        labels=("domain",), unit="events",
        source="`perf.cpu_cycles` (PMU)"),
    FamilySpec(
        "libvirt_domain_perf_branch_instructions_total", "counter",
        help_text("Count of the branch_instructions perf event", "perf.branch_instructions"),
        labels=("domain",), unit="events",
        source="`perf.branch_instructions` (PMU)"),
    FamilySpec(
        "libvirt_domain_perf_branch_misses_total", "counter",
        help_text("Count of the branch_misses perf event", "perf.branch_misses"),
        labels=("domain",), unit="events",
        source="`perf.branch_misses` (PMU)"),
    FamilySpec(
        "libvirt_domain_perf_bus_cycles_total", "counter",
        help_text("Count of the bus_cycles perf event", "perf.bus_cycles"),
        labels=("domain",), unit="events",
        source="`perf.bus_cycles` (PMU)"),
    FamilySpec(
        "libvirt_domain_perf_stalled_cycles_frontend_total", "counter",
        help_text("Count of the stalled_cycles_frontend perf event",
                  "perf.stalled_cycles_frontend"),
        labels=("domain",), unit="events",
        source="`perf.stalled_cycles_frontend` (PMU)"),
    FamilySpec(
        "libvirt_domain_perf_stalled_cycles_backend_total", "counter",
        help_text("Count of the stalled_cycles_backend perf event", "perf.stalled_cycles_backend"),
        labels=("domain",), unit="events",
        source="`perf.stalled_cycles_backend` (PMU)"),
    FamilySpec(
        "libvirt_domain_perf_ref_cpu_cycles_total", "counter",
        help_text("Count of the ref_cpu_cycles perf event", "perf.ref_cpu_cycles"),
        labels=("domain",), unit="events",
        source="`perf.ref_cpu_cycles` (PMU)"),
    FamilySpec(
        "libvirt_domain_perf_page_faults_total", "counter",
        help_text("Count of the page_faults perf event", "perf.page_faults"),
        labels=("domain",), unit="events",
        source="`perf.page_faults`"),
    FamilySpec(
        "libvirt_domain_perf_context_switches_total", "counter",
        help_text("Count of the context_switches perf event", "perf.context_switches"),
        labels=("domain",), unit="events",
        source="`perf.context_switches`"),
    FamilySpec(
        "libvirt_domain_perf_cpu_migrations_total", "counter",
        help_text("Count of the cpu_migrations perf event", "perf.cpu_migrations"),
        labels=("domain",), unit="events",
        source="`perf.cpu_migrations`"),
    FamilySpec(
        "libvirt_domain_perf_page_faults_min_total", "counter",
        help_text("Count of the page_faults_min perf event", "perf.page_faults_min"),
        labels=("domain",), unit="events",
        source="`perf.page_faults_min`"),
    FamilySpec(
        "libvirt_domain_perf_page_faults_maj_total", "counter",
        help_text("Count of the page_faults_maj perf event", "perf.page_faults_maj"),
        labels=("domain",), unit="events",
        source="`perf.page_faults_maj`"),
    FamilySpec(
        "libvirt_domain_perf_alignment_faults_total", "counter",
        help_text("Count of the alignment_faults perf event", "perf.alignment_faults"),
        labels=("domain",), unit="events",
        source="`perf.alignment_faults`"),
    FamilySpec(
        "libvirt_domain_perf_emulation_faults_total", "counter",
        help_text("Count of the emulation_faults perf event", "perf.emulation_faults"),
        labels=("domain",), unit="events",
        source="`perf.emulation_faults`"),
)
_FAMILY = by_name(FAMILIES)


class PerfCollector:
    """One family per libvirt perf event."""

    name = "perf"
    stats_groups: ClassVar[tuple[str, ...]] = ("perf",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families for every `perf.<event>` key present."""
        keyed = KeyedFamilies(("perf." + event, _FAMILY[metric], conversion)
                              for event, metric, conversion in _SPECS)
        for record in snapshot.domains:
            keyed.add(record.stats, (record.name,))
        return keyed.families
