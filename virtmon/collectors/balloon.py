"""Domain memory from the `balloon` group (`balloon.*`, KiB converted to bytes).

Sample::

    # TYPE libvirt_domain_info_memory_usage_bytes gauge
    libvirt_domain_info_memory_usage_bytes{domain="web-01"} 2147483648
    # TYPE libvirt_domain_info_maximum_memory_bytes gauge
    libvirt_domain_info_maximum_memory_bytes{domain="web-01"} 2147483648
    # TYPE libvirt_domain_memory_stats_rss_bytes gauge
    libvirt_domain_memory_stats_rss_bytes{domain="web-01"} 1421807616
    # TYPE libvirt_domain_memory_stats_swap_in_bytes_total counter
    libvirt_domain_memory_stats_swap_in_bytes_total{domain="web-01"} 0
    # TYPE libvirt_domain_memory_stats_major_fault_total counter
    libvirt_domain_memory_stats_major_fault_total{domain="web-01"} 0
    # TYPE libvirt_domain_memory_stats_last_update_timestamp_seconds gauge
    libvirt_domain_memory_stats_last_update_timestamp_seconds{domain="web-01"} 1728120434
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from virtmon.collectors.base import KeyedFamilies, help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name


def _bytes(kib: int) -> int:
    """KiB, as libvirt gives sizes, in bytes."""
    return kib * 1024


# (libvirt key, metric, conversion or None); HELP, unit and source are in FAMILIES
_SPECS: tuple[tuple[str, str, Callable[[int], int] | None], ...] = (
    ("balloon.current", "libvirt_domain_info_memory_usage_bytes", _bytes),
    ("balloon.maximum", "libvirt_domain_info_maximum_memory_bytes", _bytes),
    ("balloon.current", "libvirt_domain_memory_stats_current_balloon_bytes", _bytes),
    ("balloon.maximum", "libvirt_domain_memory_stats_maximum_bytes", _bytes),
    ("balloon.unused", "libvirt_domain_memory_stats_unused_bytes", _bytes),
    ("balloon.available", "libvirt_domain_memory_stats_available_bytes", _bytes),
    ("balloon.usable", "libvirt_domain_memory_stats_usable_bytes", _bytes),
    ("balloon.rss", "libvirt_domain_memory_stats_rss_bytes", _bytes),
    ("balloon.disk_caches", "libvirt_domain_memory_stats_disk_caches_bytes", _bytes),
    ("balloon.swap_in", "libvirt_domain_memory_stats_swap_in_bytes_total", _bytes),
    ("balloon.swap_out", "libvirt_domain_memory_stats_swap_out_bytes_total", _bytes),
    ("balloon.major_fault", "libvirt_domain_memory_stats_major_fault_total", None),
    ("balloon.minor_fault", "libvirt_domain_memory_stats_minor_fault_total", None),
    ("balloon.hugetlb_pgalloc", "libvirt_domain_memory_stats_hugetlb_pgalloc_total", None),
    ("balloon.hugetlb_pgfail", "libvirt_domain_memory_stats_hugetlb_pgfail_total", None),
    ("balloon.last-update", "libvirt_domain_memory_stats_last_update_timestamp_seconds", None),
)
# Keys whose 0 means "never": a guest without a balloon driver never reports, and a timestamp
# of 0 would read as 1970 (time() - x of 56 years), so there is no series until it does.
_ZERO_IS_NEVER = frozenset(("balloon.last-update",))


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_info_memory_usage_bytes", "gauge",
        help_text("Memory currently assigned to the domain (balloon size), in bytes",
                  "balloon.current"),
        labels=("domain",), unit="bytes",
        source="`balloon.current` (KiB)"),
    FamilySpec(
        "libvirt_domain_info_maximum_memory_bytes", "gauge",
        help_text("Maximum memory allowed for the domain, in bytes", "balloon.maximum"),
        labels=("domain",), unit="bytes",
        source="`balloon.maximum` (KiB)"),
    FamilySpec(
        "libvirt_domain_memory_stats_current_balloon_bytes", "gauge",
        help_text("Current balloon size, in bytes", "balloon.current"),
        labels=("domain",), unit="bytes",
        source="`balloon.current` (KiB)"),
    FamilySpec(
        "libvirt_domain_memory_stats_maximum_bytes", "gauge",
        help_text("Maximum memory allowed for the domain, in bytes", "balloon.maximum"),
        labels=("domain",), unit="bytes",
        source="`balloon.maximum` (KiB)"),
    FamilySpec(
        "libvirt_domain_memory_stats_unused_bytes", "gauge",
        help_text("Memory left unused by the guest, in bytes", "balloon.unused"),
        labels=("domain",), unit="bytes",
        source="`balloon.unused` (KiB, guest driver)"),
    FamilySpec(
        "libvirt_domain_memory_stats_available_bytes", "gauge",
        help_text("Memory usable as seen by the guest, in bytes", "balloon.available"),
        labels=("domain",), unit="bytes",
        source="`balloon.available` (KiB, guest driver)"),
    FamilySpec(
        "libvirt_domain_memory_stats_usable_bytes", "gauge",
        help_text("Memory the balloon can reclaim without host swapping, in bytes",
                  "balloon.usable"),
        labels=("domain",), unit="bytes",
        source="`balloon.usable` (KiB, guest driver)"),
    FamilySpec(
        "libvirt_domain_memory_stats_rss_bytes", "gauge",
        help_text("Resident set size of the domain's process on the host, in bytes", "balloon.rss"),
        labels=("domain",), unit="bytes",
        source="`balloon.rss` (KiB): QEMU's resident set on the host"),
    FamilySpec(
        "libvirt_domain_memory_stats_disk_caches_bytes", "gauge",
        help_text("Guest memory reclaimable without I/O (disk caches), in bytes",
                  "balloon.disk_caches"),
        labels=("domain",), unit="bytes",
        source="`balloon.disk_caches` (KiB, guest driver)"),
    FamilySpec(
        "libvirt_domain_memory_stats_swap_in_bytes_total", "counter",
        help_text("Data the guest read from swap, in bytes", "balloon.swap_in"),
        labels=("domain",), unit="bytes",
        source="`balloon.swap_in` (KiB)"),
    FamilySpec(
        "libvirt_domain_memory_stats_swap_out_bytes_total", "counter",
        help_text("Data the guest wrote to swap, in bytes", "balloon.swap_out"),
        labels=("domain",), unit="bytes",
        source="`balloon.swap_out` (KiB)"),
    FamilySpec(
        "libvirt_domain_memory_stats_major_fault_total", "counter",
        help_text("Guest page faults that needed disk I/O", "balloon.major_fault"),
        labels=("domain",), unit="faults",
        source="`balloon.major_fault`"),
    FamilySpec(
        "libvirt_domain_memory_stats_minor_fault_total", "counter",
        help_text("Guest page faults without disk I/O", "balloon.minor_fault"),
        labels=("domain",), unit="faults",
        source="`balloon.minor_fault`"),
    FamilySpec(
        "libvirt_domain_memory_stats_hugetlb_pgalloc_total", "counter",
        help_text("Successful huge page allocations in the guest via the balloon",
                  "balloon.hugetlb_pgalloc"),
        labels=("domain",), unit="allocations",
        source="`balloon.hugetlb_pgalloc`"),
    FamilySpec(
        "libvirt_domain_memory_stats_hugetlb_pgfail_total", "counter",
        help_text("Failed huge page allocations in the guest via the balloon",
                  "balloon.hugetlb_pgfail"),
        labels=("domain",), unit="allocations",
        source="`balloon.hugetlb_pgfail`"),
    FamilySpec(
        "libvirt_domain_memory_stats_last_update_timestamp_seconds", "gauge",
        help_text("When the guest last updated its memory statistics, Unix time in seconds (no "
                  "series before its first update)", "balloon.last-update"),
        labels=("domain",), unit="Unix time",
        source="`balloon.last-update`; no series while it is 0 (the guest never reported)"),
)
_FAMILY = by_name(FAMILIES)


class BalloonCollector:
    """Domain memory sizes in bytes and guest memory counters from the balloon driver."""

    name = "balloon"
    stats_groups: ClassVar[tuple[str, ...]] = ("balloon",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """One family per `balloon.*` key (current and maximum feed two names each)."""
        keyed = KeyedFamilies(((key, _FAMILY[metric], conversion)
                               for key, metric, conversion in _SPECS),
                              zero_is_never=_ZERO_IS_NEVER)
        for record in snapshot.domains:
            keyed.add(record.stats, (record.name,))
        return keyed.families
