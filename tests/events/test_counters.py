"""Event counters: what each kind of event adds, and deleted domains dropped."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from virtmon.collectors.base import run_collectors
from virtmon.collectors.events import EventsCollector
from virtmon.collectors.snapshot import DomainRecord, StatsSnapshot
from virtmon.events.counters import EventCounters
from virtmon.events.model import Event
from virtmon.exposition.render import render_text


def event(kind: str, name: str, detail: str | None = None, domain: str = "web",
          **payload: object) -> Event:
    """An event of a domain at time 100."""
    return Event(time=100.0, uri="test:///", kind=kind, name=name, detail=detail,
                 domain=domain, uuid="u-" + domain, payload=payload)


def exported(counters: EventCounters, domains: list[str]) -> dict[tuple[str, frozenset], float]:
    """The events collector's samples for a snapshot listing ``domains``."""
    snapshot = StatsSnapshot(
        taken_at=0, requested_groups=frozenset(),
        domains=tuple(DomainRecord(d, "u-" + d, {}) for d in domains),
        events=counters.snapshot(domains),
    )
    families, outcomes = run_collectors([EventsCollector()], snapshot)
    assert all(o.success for o in outcomes)
    text = render_text(families).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_each_kind_of_event_counts_under_its_metric() -> None:
    """Lifecycle, IO error, watchdog, reboot, block threshold and job events each count."""
    counters = EventCounters()
    for item in (
        event("lifecycle", "stopped", "failed"),
        event("lifecycle", "stopped", "failed"),
        event("io_error", "io_error", "pause", dev_alias="virtio-disk0"),
        event("io_error_reason", "io_error_reason", "pause", dev_alias="virtio-disk0"),
        event("watchdog", "reset"),
        event("reboot", "reboot"),
        event("block_threshold", "block_threshold", dev="vda"),
        event("job_completed", "job_completed", "save"),
    ):
        counters.on_event(item)
    got = exported(counters, ["web"])
    assert got[("libvirt_domain_events_total", frozenset(
        {("domain", "web"), ("event", "stopped"), ("detail", "failed")}))] == 2
    assert got[("libvirt_domain_io_errors_total", frozenset(
        {("domain", "web"), ("device", "virtio-disk0"), ("action", "pause")}))] == 1
    assert got[("libvirt_domain_watchdog_events_total", frozenset(
        {("domain", "web"), ("action", "reset")}))] == 1
    assert got[("libvirt_domain_reboots_total", frozenset({("domain", "web")}))] == 1
    assert got[("libvirt_domain_block_threshold_events_total", frozenset(
        {("domain", "web"), ("target_device", "vda")}))] == 1
    assert got[("libvirt_domain_jobs_completed_total", frozenset(
        {("domain", "web"), ("operation", "save")}))] == 1
    assert got[("libvirt_domain_last_event_timestamp_seconds",
                frozenset({("domain", "web")}))] == 100.0


def test_a_domain_gone_from_the_listing_is_dropped() -> None:
    """Counts of a domain no longer listed vanish from the exposition and from memory."""
    counters = EventCounters()
    counters.on_event(event("reboot", "reboot", domain="old"))
    counters.on_event(event("reboot", "reboot", domain="kept"))
    got = exported(counters, ["kept"])
    assert ("libvirt_domain_reboots_total", frozenset({("domain", "old")})) not in got
    assert counters.snapshot().reboots == {("kept",): 1}
