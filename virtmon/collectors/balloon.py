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

from typing import ClassVar

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import MetricFamily, MetricType

# (libvirt key, metric, type, multiplier, description)
_SPECS: tuple[tuple[str, str, MetricType, int, str], ...] = (
    (
        "balloon.current",
        "libvirt_domain_info_memory_usage_bytes",
        "gauge",
        1024,
        "Memory currently assigned to the domain (balloon size), in bytes",
    ),
    (
        "balloon.maximum",
        "libvirt_domain_info_maximum_memory_bytes",
        "gauge",
        1024,
        "Maximum memory allowed for the domain, in bytes",
    ),
    (
        "balloon.current",
        "libvirt_domain_memory_stats_current_balloon_bytes",
        "gauge",
        1024,
        "Current balloon size, in bytes",
    ),
    (
        "balloon.maximum",
        "libvirt_domain_memory_stats_maximum_bytes",
        "gauge",
        1024,
        "Maximum memory allowed for the domain, in bytes",
    ),
    (
        "balloon.unused",
        "libvirt_domain_memory_stats_unused_bytes",
        "gauge",
        1024,
        "Memory left unused by the guest, in bytes",
    ),
    (
        "balloon.available",
        "libvirt_domain_memory_stats_available_bytes",
        "gauge",
        1024,
        "Memory usable as seen by the guest, in bytes",
    ),
    (
        "balloon.usable",
        "libvirt_domain_memory_stats_usable_bytes",
        "gauge",
        1024,
        "Memory the balloon can reclaim without host swapping, in bytes",
    ),
    (
        "balloon.rss",
        "libvirt_domain_memory_stats_rss_bytes",
        "gauge",
        1024,
        "Resident set size of the domain's process on the host, in bytes",
    ),
    (
        "balloon.disk_caches",
        "libvirt_domain_memory_stats_disk_caches_bytes",
        "gauge",
        1024,
        "Guest memory reclaimable without I/O (disk caches), in bytes",
    ),
    (
        "balloon.swap_in",
        "libvirt_domain_memory_stats_swap_in_bytes_total",
        "counter",
        1024,
        "Data the guest read from swap, in bytes",
    ),
    (
        "balloon.swap_out",
        "libvirt_domain_memory_stats_swap_out_bytes_total",
        "counter",
        1024,
        "Data the guest wrote to swap, in bytes",
    ),
    (
        "balloon.major_fault",
        "libvirt_domain_memory_stats_major_fault_total",
        "counter",
        1,
        "Guest page faults that needed disk I/O",
    ),
    (
        "balloon.minor_fault",
        "libvirt_domain_memory_stats_minor_fault_total",
        "counter",
        1,
        "Guest page faults without disk I/O",
    ),
    (
        "balloon.hugetlb_pgalloc",
        "libvirt_domain_memory_stats_hugetlb_pgalloc_total",
        "counter",
        1,
        "Successful huge page allocations in the guest via the balloon",
    ),
    (
        "balloon.hugetlb_pgfail",
        "libvirt_domain_memory_stats_hugetlb_pgfail_total",
        "counter",
        1,
        "Failed huge page allocations in the guest via the balloon",
    ),
    (
        "balloon.last-update",
        "libvirt_domain_memory_stats_last_update_timestamp_seconds",
        "gauge",
        1,
        "When the guest last updated its memory statistics, Unix time in seconds (no series "
        "before its first update)",
    ),
)
# Keys whose 0 means "never": a guest without a balloon driver never reports, and a timestamp
# of 0 would read as 1970 (time() - x of 56 years), so there is no series until it does.
_ZERO_IS_NEVER = frozenset(("balloon.last-update",))


class BalloonCollector:
    """Domain memory sizes in bytes and guest memory counters from the balloon driver."""

    name = "balloon"
    stats_groups: ClassVar[tuple[str, ...]] = ("balloon",)

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """One family per `balloon.*` key (current and maximum feed two names each)."""
        specs = [
            (key, scale, MetricFamily(metric, kind, help_text(what, key), ("domain",)))
            for key, metric, kind, scale, what in _SPECS
        ]
        for record in snapshot.domains:
            stats = record.stats
            labels = (record.name,)
            for key, scale, family in specs:
                value = stats.get(key)
                if value is not None and not (value == 0 and key in _ZERO_IS_NEVER):
                    family.add(labels, value * scale)
        return [family for _, _, family in specs]
