"""A running domain job's progress (``virDomainGetJobStats``), as metric families.

The readings come from the job watcher (virtmon/virt/jobs.py), which asks only the domains known
to have a job. This module is pure: readings in, families out, no libvirt call. A domain without
a running job has none of these series (libvirt's ``type`` none, or never asked).

Sample::

    # TYPE libvirt_domain_job_info gauge
    libvirt_domain_job_info{domain="web-01",type="unbounded",operation="migration_out"} 1
    # TYPE libvirt_domain_job_data_processed_bytes gauge
    libvirt_domain_job_data_processed_bytes{domain="web-01"} 35651584
    # TYPE libvirt_domain_job_memory_iteration gauge
    libvirt_domain_job_memory_iteration{domain="web-01"} 2
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from virtmon.events.decode import JOB_OPERATIONS, enum_table
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

__all__ = ["FAMILIES", "JOB_TYPES", "JobReading", "job_families", "running"]

# virDomainJobType: none, bounded, unbounded, completed, failed, cancelled.
JOB_TYPES = enum_table("VIR_DOMAIN_JOB_", single_word=True)
# The types of a job that still runs (a completed, failed or cancelled one is over).
RUNNING_TYPES = frozenset(code for code, name in JOB_TYPES.items()
                          if name in ("bounded", "unbounded"))

_MS = 1e-3


def _help(what: str, key: str) -> str:
    """HELP naming the job-stats key; the values are as old as the watcher's last round."""
    return (f"{what} (libvirt virDomainGetJobStats {key}; value from the last job-watcher round, "
            "only while a job runs).")


@dataclass(frozen=True, slots=True)
class Gauge:
    """One job-stats key exported as a gauge of one domain: libvirt's value times ``scale``."""

    family: str
    key: str
    what: str
    unit: str
    scale: float = 1.0

    def spec(self) -> FamilySpec:
        return FamilySpec(self.family, "gauge", _help(self.what, self.key), ("domain",),
                          unit=self.unit, source=f"`{self.key}` of virDomainGetJobStats"
                          + ("" if self.scale == 1.0 else f" (* {self.scale:g})"))


GAUGES: tuple[Gauge, ...] = (
    Gauge("libvirt_domain_job_elapsed_seconds", "time_elapsed",
          "Time since the job started, in seconds", "seconds", _MS),
    Gauge("libvirt_domain_job_remaining_seconds", "time_remaining",
          "Expected time until the job ends, in seconds (bounded jobs)", "seconds", _MS),
    Gauge("libvirt_domain_job_expected_downtime_seconds", "downtime",
          "Expected downtime of the guest at the end of a migration, in seconds", "seconds",
          _MS),
    Gauge("libvirt_domain_job_data_bytes", "data_total",
          "Bytes the job is expected to transfer in all (grows as the guest writes)", "bytes"),
    Gauge("libvirt_domain_job_data_processed_bytes", "data_processed",
          "Bytes the job transferred so far", "bytes"),
    Gauge("libvirt_domain_job_data_remaining_bytes", "data_remaining",
          "Bytes the job has still to transfer", "bytes"),
    Gauge("libvirt_domain_job_memory_bytes", "memory_total",
          "Guest memory bytes the job is expected to transfer in all", "bytes"),
    Gauge("libvirt_domain_job_memory_processed_bytes", "memory_processed",
          "Guest memory bytes the job transferred so far", "bytes"),
    Gauge("libvirt_domain_job_memory_remaining_bytes", "memory_remaining",
          "Guest memory bytes the job has still to transfer", "bytes"),
    Gauge("libvirt_domain_job_memory_transfer_bytes_per_second", "memory_bps",
          "Rate of the guest memory transfer, in bytes per second", "bytes/s"),
    Gauge("libvirt_domain_job_memory_iteration", "memory_iteration",
          "Pass over the guest's memory the migration is in (1 is the first)", "passes"),
    Gauge("libvirt_domain_job_memory_postcopy_requests", "memory_postcopy_requests",
          "Page requests the destination sent during post-copy", "requests"),
    Gauge("libvirt_domain_job_disk_bytes", "disk_total",
          "Disk bytes the job is expected to transfer in all", "bytes"),
    Gauge("libvirt_domain_job_disk_processed_bytes", "disk_processed",
          "Disk bytes the job transferred so far", "bytes"),
    Gauge("libvirt_domain_job_disk_remaining_bytes", "disk_remaining",
          "Disk bytes the job has still to transfer", "bytes"),
    Gauge("libvirt_domain_job_disk_transfer_bytes_per_second", "disk_bps",
          "Rate of the disk transfer, in bytes per second", "bytes/s"),
    Gauge("libvirt_domain_job_auto_converge_throttle_ratio", "auto_converge_throttle",
          "Share of the guest's CPU time taken away to let the migration converge (0-1)",
          "ratio", 0.01),
)

DIRTY_RATE = FamilySpec(
    "libvirt_domain_job_memory_dirty_rate_bytes_per_second", "gauge",
    _help("Rate at which the guest writes to memory during the job, in bytes per second",
          "memory_dirty_rate * memory_page_size"),
    ("domain",), unit="bytes/s",
    source="`memory_dirty_rate` (pages/s) * `memory_page_size` of virDomainGetJobStats")
INFO = FamilySpec(
    "libvirt_domain_job_info", "info",
    _help("The running job's type and operation", "type, operation"),
    ("domain", "type", "operation"), unit="info",
    source="`type` (bounded, unbounded) and `operation` (migration_out, migration_in, save, "
           "dump, ...; empty where libvirt does not say) of virDomainGetJobStats")

FAMILIES: tuple[FamilySpec, ...] = (
    INFO, *(gauge.spec() for gauge in GAUGES), DIRTY_RATE,
    FamilySpec(
        "virtmon_domain_jobs_watched", "gauge",
        "Domains the job watcher asks for job statistics (known to have a job).",
        unit="domains", source="the job watcher's set (bounded by its limit)"),
    FamilySpec(
        "virtmon_domain_jobs_unwatched_total", "counter",
        "Domains with a job the watcher did not take because its set was full.",
        unit="domains", source="the job watcher, past its limit"),
)
_FAMILY = by_name(FAMILIES)


@dataclass(frozen=True, slots=True)
class JobReading:
    """One domain's ``virDomainGetJobStats`` answer, as libvirt gave it."""

    domain: str
    stats: Mapping[str, Any]


def running(stats: Mapping[str, Any]) -> bool:
    """Whether job statistics describe a job that still runs."""
    return stats.get("type") in RUNNING_TYPES


def job_families(readings: list[JobReading], watched: int = 0,
                 unwatched_total: int = 0) -> list[MetricFamily]:
    """Every family of the watcher's last round (readings of running jobs only)."""
    info = INFO.new()
    gauges = [(gauge, _FAMILY[gauge.family].new()) for gauge in GAUGES]
    dirty = DIRTY_RATE.new()
    for reading in readings:
        stats = reading.stats
        if not running(stats):
            continue
        labels = (reading.domain,)
        operation = stats.get("operation")
        info.add((reading.domain, JOB_TYPES[stats["type"]],
                  "" if operation is None else JOB_OPERATIONS.get(operation,
                                                                  f"operation_{operation}")), 1)
        for gauge, family in gauges:
            value = stats.get(gauge.key)
            if value is not None:
                family.add(labels, value * gauge.scale if gauge.scale != 1.0 else value)
        if "memory_dirty_rate" in stats and "memory_page_size" in stats:
            dirty.add(labels, stats["memory_dirty_rate"] * stats["memory_page_size"])
    watched_family = _FAMILY["virtmon_domain_jobs_watched"].new()
    watched_family.add((), watched)
    unwatched = _FAMILY["virtmon_domain_jobs_unwatched_total"].new()
    unwatched.add((), unwatched_total)
    return [info, *(family for _, family in gauges), dirty, watched_family, unwatched]
