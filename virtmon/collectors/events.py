"""Event counters: how often each domain saw each kind of event, from `snapshot.events`.

Sample::

    # TYPE libvirt_domain_events_total counter
    libvirt_domain_events_total{domain="web-01",event="stopped",detail="failed"} 1
    # TYPE libvirt_domain_io_errors_total counter
    libvirt_domain_io_errors_total{domain="web-01",device="virtio-disk0",action="pause"} 2
    # TYPE libvirt_domain_last_event_timestamp_seconds gauge
    libvirt_domain_last_event_timestamp_seconds{domain="web-01"} 1.7954e+09
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from virtmon.collectors.base import NoData
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import MetricFamily

SOURCE = "domain events since virtmon started; value from the last collection cycle"

# (attribute of EventCounts, metric name, help, label names after "domain")
COUNTERS = (
    ("lifecycle", "libvirt_domain_events_total",
     "Lifecycle events by event and detail", ("event", "detail")),
    ("io_errors", "libvirt_domain_io_errors_total",
     "IO errors by device alias and the action taken", ("device", "action")),
    ("watchdog", "libvirt_domain_watchdog_events_total",
     "Watchdog events by action", ("action",)),
    ("reboots", "libvirt_domain_reboots_total", "Guest reboots", ()),
    ("block_threshold", "libvirt_domain_block_threshold_events_total",
     "Block threshold crossings by target device", ("target_device",)),
    ("jobs_completed", "libvirt_domain_jobs_completed_total",
     "Completed jobs by operation", ("operation",)),
)


class EventsCollector:
    """Counters of decoded events per domain, and each domain's last event time."""

    name = "events"
    stats_groups: ClassVar[tuple[str, ...]] = ()

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families for the domains of this snapshot; `NoData` when no counts were taken."""
        counts = snapshot.events
        if counts is None:
            raise NoData("no event counts in this snapshot")
        present = {record.name for record in snapshot.domains}
        families = []
        for attribute, name, what, labels in COUNTERS:
            family = MetricFamily(name, "counter", f"{what} ({SOURCE}).", ("domain", *labels))
            table: Mapping[tuple[str, ...], int] = getattr(counts, attribute)
            for key in sorted(table):
                if key[0] in present:
                    family.add(key, table[key])
            families.append(family)
        last = MetricFamily(
            "libvirt_domain_last_event_timestamp_seconds", "gauge",
            f"Unix time of the domain's last event ({SOURCE}).", ("domain",),
        )
        for domain in sorted(counts.last_event):
            if domain in present:
                last.add((domain,), counts.last_event[domain])
        families.append(last)
        return families
