"""Event counters for the metrics, fed by the bus: lifecycle by event and detail, IO errors,
watchdog actions, reboots, block thresholds, completed jobs, and each domain's last event time.

The bus calls :meth:`EventCounters.on_event` on the loop for every journaled event; each cycle
takes an immutable :class:`EventCounts` copy into its snapshot, and the pure ``events`` collector
exports it. Counts of a domain that is gone from the cycle's listing are dropped, so deleted
domains are not exported for ever (a domain that comes back starts from zero: a counter reset,
which Prometheus handles).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from virtmon.events.model import Event

Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventCounts:
    """One cycle's copy of every counter; keys start with the domain name."""

    lifecycle: Mapping[Key, int] = field(default_factory=dict)  # (domain, event, detail)
    io_errors: Mapping[Key, int] = field(default_factory=dict)  # (domain, device, action)
    watchdog: Mapping[Key, int] = field(default_factory=dict)  # (domain, action)
    reboots: Mapping[Key, int] = field(default_factory=dict)  # (domain,)
    block_threshold: Mapping[Key, int] = field(default_factory=dict)  # (domain, target_device)
    jobs_completed: Mapping[Key, int] = field(default_factory=dict)  # (domain, operation)
    last_event: Mapping[str, float] = field(default_factory=dict)  # domain -> unix time


class EventCounters:
    """Running totals since virtmon started (synthetic reconciled events included)."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter[Key]] = {
            name: Counter() for name in
            ("lifecycle", "io_errors", "watchdog", "reboots", "block_threshold", "jobs_completed")
        }
        self._last_event: dict[str, float] = {}

    def on_event(self, event: Event) -> None:
        """Count one journaled event (bus listener: the loop thread; never raises on odd data)."""
        domain = event.domain
        if domain is None:
            return
        self._last_event[domain] = max(event.time, self._last_event.get(domain, 0.0))
        payload = event.payload
        if event.kind == "lifecycle":
            key: Key = (domain, event.name, event.detail or "")
            self._counters["lifecycle"][key] += 1
        elif event.kind == "io_error":  # io_error_reason repeats the same error: not counted
            device = str(payload.get("dev_alias") or payload.get("src_path") or "")
            self._counters["io_errors"][(domain, device, str(event.detail or ""))] += 1
        elif event.kind == "watchdog":
            self._counters["watchdog"][(domain, event.name)] += 1
        elif event.kind == "reboot":
            self._counters["reboots"][(domain,)] += 1
        elif event.kind == "block_threshold":
            self._counters["block_threshold"][(domain, str(payload.get("dev") or ""))] += 1
        elif event.kind == "job_completed":
            self._counters["jobs_completed"][(domain, str(event.detail or "unknown"))] += 1

    def snapshot(self, domains: Iterable[str] | None = None) -> EventCounts:
        """A frozen copy; with ``domains``, counts of every other domain are dropped first."""
        if domains is not None:
            keep = set(domains)
            for counter in self._counters.values():
                for key in [k for k in counter if k[0] not in keep]:
                    del counter[key]
            for name in [n for n in self._last_event if n not in keep]:
                del self._last_event[name]
        copies = {name: MappingProxyType(dict(c)) for name, c in self._counters.items()}
        return EventCounts(last_event=MappingProxyType(dict(self._last_event)), **copies)
