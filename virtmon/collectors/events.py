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
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

SOURCE = "domain events since virtmon started; value from the last collection cycle"

# (attribute of EventCounts, metric name); HELP, labels, unit and source are in FAMILIES
COUNTERS = (
    ("lifecycle", "libvirt_domain_events_total"),
    ("io_errors", "libvirt_domain_io_errors_total"),
    ("watchdog", "libvirt_domain_watchdog_events_total"),
    ("reboots", "libvirt_domain_reboots_total"),
    ("block_threshold", "libvirt_domain_block_threshold_events_total"),
    ("jobs_completed", "libvirt_domain_jobs_completed_total"),
)


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_events_total", "counter",
        help=f"Lifecycle events by event and detail ({SOURCE}).",
        labels=("domain", "event", "detail"), unit="events",
        source="LIFECYCLE: virDomainEventType and its detail, lower-case (`suspended`, "
               "`paused`)"),
    FamilySpec(
        "libvirt_domain_io_errors_total", "counter",
        help=f"IO errors by device alias and the action taken ({SOURCE}).",
        labels=("domain", "device", "action"), unit="events",
        source="IO_ERROR (device alias or path, action)"),
    FamilySpec(
        "libvirt_domain_watchdog_events_total", "counter",
        help=f"Watchdog events by action ({SOURCE}).",
        labels=("domain", "action"), unit="events",
        source="WATCHDOG"),
    FamilySpec(
        "libvirt_domain_reboots_total", "counter",
        help=f"Guest reboots ({SOURCE}).",
        labels=("domain",), unit="events",
        source="REBOOT"),
    FamilySpec(
        "libvirt_domain_block_threshold_events_total", "counter",
        help=f"Block threshold crossings by target device ({SOURCE}).",
        labels=("domain", "target_device"), unit="events",
        source="BLOCK_THRESHOLD"),
    FamilySpec(
        "libvirt_domain_jobs_completed_total", "counter",
        help=f"Completed jobs by operation ({SOURCE}).",
        labels=("domain", "operation"), unit="events",
        source="JOB_COMPLETED (virDomainJobOperation, lower-case)"),
    FamilySpec(
        "libvirt_domain_last_event_timestamp_seconds", "gauge",
        help=f"Unix time of the domain's last event ({SOURCE}).",
        labels=("domain",), unit="Unix time",
        source="when virtmon received the domain's last event"),
)
_FAMILY = by_name(FAMILIES)


class EventsCollector:
    """Counters of decoded events per domain, and each domain's last event time."""

    name = "events"
    stats_groups: ClassVar[tuple[str, ...]] = ()
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families for the domains of this snapshot; `NoData` when no counts were taken."""
        counts = snapshot.events
        if counts is None:
            raise NoData("no event counts in this snapshot")
        present = {record.name for record in snapshot.domains}
        families = []
        for attribute, name in COUNTERS:
            family = _FAMILY[name].new()
            table: Mapping[tuple[str, ...], int] = getattr(counts, attribute)
            for key in sorted(table):
                if key[0] in present:
                    family.add(key, table[key])
            families.append(family)
        last = _FAMILY["libvirt_domain_last_event_timestamp_seconds"].new()
        for domain in sorted(counts.last_event):
            if domain in present:
                last.add((domain,), counts.last_event[domain])
        families.append(last)
        return families
