"""Metrics about virtmon itself, built fresh each cycle from the components' own counters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from virtmon import __version__
from virtmon.collectors.base import MetricFamily, MetricType
from virtmon.events.bus import INGEST_SINK, EventBus
from virtmon.events.catalog import domain_event_ids, kind_name
from virtmon.events.model import VIRTMON_KINDS
from virtmon.virt.calls import LibvirtCaller
from virtmon.virt.connection import CLOSE_REASONS, ConnectionSupervisor, State


@dataclass(slots=True)
class CycleStats:
    """What the scheduler knows about its own cycles."""

    last_duration: float = 0.0
    last_success: float = 0.0
    cycles: int = 0
    failures: int = 0


# Every kind an event can have here: each domain event id this libvirt knows, and virtmon's own.
EVENT_KINDS = sorted({kind_name(i) for i in domain_event_ids()} | set(VIRTMON_KINDS))


def _with_zeros(counts: Mapping[str, int], known: Iterable[str]) -> dict[str, int]:
    """Counts with every known label value present from the start: a counter series that first
    appears at 1 has no increase() in PromQL, so the first loss or reconnect would go unseen."""
    return {**dict.fromkeys(known, 0), **counts}


def _counter_family(name: str, help_: str, label: str, counts: Mapping[str, int]) -> MetricFamily:
    family = MetricFamily(name, "counter", help_, (label,))
    for key in sorted(counts):
        family.add((key,), counts[key])
    return family


def _single(name: str, kind: MetricType, help_: str, value: float) -> MetricFamily:
    family = MetricFamily(name, kind, help_)
    family.add((), value)
    return family


def self_metrics(
    supervisor: ConnectionSupervisor, bus: EventBus, caller: LibvirtCaller, cycle: CycleStats
) -> list[MetricFamily]:
    """The virtmon_* families."""
    build = MetricFamily("virtmon_build_info", "gauge", "virtmon's version.", ("version",))
    build.add((__version__,), 1)
    state = MetricFamily(
        "virtmon_libvirt_connection_state", "gauge",
        "The connection supervisor's state (1 for the current one).", ("state",),
    )
    for candidate in State:
        state.add((candidate.value,), 1 if supervisor.state is candidate else 0)
    singles = [
        _single("virtmon_libvirt_event_ids_registered", "gauge",
                "Domain event ids the running libvirt accepted on the current connection.",
                len(supervisor.event_ids)),
        _single("virtmon_collection_duration_seconds", "gauge",
                "Wall time of the last collection cycle, in seconds.", cycle.last_duration),
        _single("virtmon_collection_last_success_timestamp_seconds", "gauge",
                "Unix time of the last successful collection cycle: the age of every cached "
                "value.", cycle.last_success),
        _single("virtmon_collection_failures_total", "counter",
                "Collection cycles whose libvirt calls failed or overran their deadline.",
                cycle.failures),
        _single("virtmon_libvirt_calls_abandoned_total", "counter",
                "libvirt calls abandoned after overrunning their deadline.",
                caller.abandoned_total),
        _single("virtmon_libvirt_calls_abandoned_outstanding", "gauge",
                "Abandoned libvirt calls whose worker threads are still blocked in libvirt.",
                caller.abandoned_outstanding),
        _single("virtmon_events_last_sequence", "gauge",
                "Sequence number of the last journaled event.", bus.published_seq),
    ]
    return [
        build, state, *singles,
        _counter_family("virtmon_libvirt_reconnects_total",
                        "Connections to libvirt lost (and then re-established), by close reason.",
                        "reason", _with_zeros(supervisor.reconnects, CLOSE_REASONS.values())),
        _counter_family("virtmon_events_received_total",
                        "Events received from libvirt or inferred by reconciling, by kind.",
                        "kind", _with_zeros(bus.received, EVENT_KINDS)),
        _counter_family("virtmon_events_dropped_total",
                        "Events a full bounded queue had to drop, by sink.", "sink",
                        _with_zeros(bus.dropped, (INGEST_SINK,))),
    ]


@dataclass(frozen=True, slots=True)
class SelfMetrics:
    """The virtmon_* families, as one of the scheduler's metric sources."""

    supervisor: ConnectionSupervisor
    bus: EventBus
    caller: LibvirtCaller
    cycle: CycleStats

    def families(self) -> list[MetricFamily]:
        """This moment's virtmon_* families."""
        return self_metrics(self.supervisor, self.bus, self.caller, self.cycle)
