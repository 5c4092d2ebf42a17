"""Memory dirty rate from the `dirtyrate` group (MiB/s converted to bytes per second).

The rate exists only after a calculation was started (virDomainStartDirtyRateCalc) and has
finished (`calc_status` 2, measured).

Sample::

    # TYPE libvirt_domain_dirtyrate_calc_status gauge
    libvirt_domain_dirtyrate_calc_status{domain="web-01"} 2
    # TYPE libvirt_domain_dirtyrate_bytes_per_second gauge
    libvirt_domain_dirtyrate_bytes_per_second{domain="web-01"} 4194304
    # TYPE libvirt_domain_dirtyrate_vcpu_bytes_per_second gauge
    libvirt_domain_dirtyrate_vcpu_bytes_per_second{domain="web-01",vcpu="0"} 2097152
    # TYPE libvirt_domain_dirtyrate_info gauge
    libvirt_domain_dirtyrate_info{domain="web-01",calc_mode="page-sampling"} 1
"""

from __future__ import annotations

from typing import ClassVar

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

_MIB = 1024 * 1024


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_dirtyrate_calc_status", "gauge",
        help_text("Dirty-rate calculation status (0 unstarted, 1 measuring, 2 measured)",
                  "dirtyrate.calc_status"),
        labels=("domain",), unit="0 unstarted, 1 measuring, 2 measured",
        source="`dirtyrate.calc_status`"),
    FamilySpec(
        "libvirt_domain_dirtyrate_calc_start_timestamp_seconds", "gauge",
        help_text("Start of the last calculation, as a Unix timestamp in seconds; only where "
                  "libvirt runs on virtmon's host", "dirtyrate.calc_start_time"),
        labels=("domain",), unit="Unix time",
        source="`dirtyrate.calc_start_time` (QEMU's monotonic seconds, moved to Unix time; only "
               "where libvirt runs on virtmon's host, none before a calculation)"),
    FamilySpec(
        "libvirt_domain_dirtyrate_calc_period_seconds", "gauge",
        help_text("Period of the last calculation, in seconds", "dirtyrate.calc_period"),
        labels=("domain",), unit="seconds",
        source="`dirtyrate.calc_period`"),
    FamilySpec(
        "libvirt_domain_dirtyrate_bytes_per_second", "gauge",
        help_text("Measured memory dirty rate, in bytes per second",
                  "dirtyrate.megabytes_per_second"),
        labels=("domain",), unit="bytes/s",
        source="`dirtyrate.megabytes_per_second` (MiB/s)"),
    FamilySpec(
        "libvirt_domain_dirtyrate_vcpu_bytes_per_second", "gauge",
        help_text("Measured memory dirty rate of one vCPU, in bytes per second",
                  "dirtyrate.vcpu.<n>.megabytes_per_second"),
        labels=("domain", "vcpu"), unit="bytes/s",
        source="`dirtyrate.vcpu.<n>.megabytes_per_second` (MiB/s; dirty-ring mode)"),
    FamilySpec(
        "libvirt_domain_dirtyrate_info", "info",
        help_text("Mode of the last dirty-rate calculation", "dirtyrate.calc_mode"),
        labels=("domain", "calc_mode"), unit="info",
        source="`dirtyrate.calc_mode`"),
)
_FAMILY = by_name(FAMILIES)


class DirtyrateCollector:
    """Dirty-rate calculation status, timing, and the measured rates."""

    name = "dirtyrate"
    stats_groups: ClassVar[tuple[str, ...]] = ("dirtyrate",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families for `dirtyrate.*`."""
        status = _FAMILY["libvirt_domain_dirtyrate_calc_status"].new()
        start = _FAMILY["libvirt_domain_dirtyrate_calc_start_timestamp_seconds"].new()
        period = _FAMILY["libvirt_domain_dirtyrate_calc_period_seconds"].new()
        rate = _FAMILY["libvirt_domain_dirtyrate_bytes_per_second"].new()
        vcpu_rate = _FAMILY["libvirt_domain_dirtyrate_vcpu_bytes_per_second"].new()
        info = _FAMILY["libvirt_domain_dirtyrate_info"].new()
        for record in snapshot.domains:
            stats = record.stats
            value = stats.get("dirtyrate.calc_status")
            if value is None:
                continue
            labels = (record.name,)
            status.add(labels, value)
            value = stats.get("dirtyrate.calc_start_time")
            if value and snapshot.monotonic_at is not None:
                # QEMU states the start in seconds on the host's monotonic clock: as Unix time
                # by this host's clocks, where libvirt runs here; none before any calculation.
                start.add(labels, snapshot.taken_at - (snapshot.monotonic_at - value))
            value = stats.get("dirtyrate.calc_period")
            if value is not None:
                period.add(labels, value)
            value = stats.get("dirtyrate.megabytes_per_second")
            if value is not None:
                rate.add(labels, value * _MIB)
            mode = stats.get("dirtyrate.calc_mode")
            if mode is not None:
                info.add((record.name, str(mode)), 1)
            if value is not None:  # per-vCPU rates exist only in dirty-ring mode when measured
                for key, vcpu_value in stats.items():
                    if key.startswith("dirtyrate.vcpu."):
                        vcpu_rate.add((record.name, key.split(".")[2]), vcpu_value * _MIB)
        return [status, start, period, rate, vcpu_rate, info]
