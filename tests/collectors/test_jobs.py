"""The job families from recorded virDomainGetJobStats answers, and which domains the job watcher
asks."""

from __future__ import annotations

from typing import Any, cast

import libvirt

from virtmon.collectors.jobs import FAMILIES, JobReading, job_families
from virtmon.collectors.snapshot import DomainRecord, StatsSnapshot
from virtmon.config import CollectConfig
from virtmon.events.model import Event
from virtmon.exposition.family import MetricFamily
from virtmon.exposition.render import render_text
from virtmon.virt.connection import ConnectionSupervisor
from virtmon.virt.handle import ConnectionSettings
from virtmon.virt.inventory import Inventory
from virtmon.virt.jobs import MAX_WATCHED, JobWatcher

# Recorded on the lab (libvirt 9.0, QEMU 7.2) while a lab guest migrated to the second host
# (live, its 32 MiB data disk copied, bandwidth 4 MiB/s): first the disk copy (no memory pass
# yet: QEMU's memory figures are zero and there is no page size), then the first pass.
LAB_DISK_PHASE: dict[str, Any] = {
    "operation": 5, "time_elapsed": 2001, "data_total": 33554432, "data_processed": 16777216,
    "data_remaining": 16777216, "memory_total": 0, "memory_processed": 0, "memory_remaining": 0,
    "memory_dirty_rate": 0, "memory_iteration": 0, "memory_postcopy_requests": 0,
    "disk_total": 33554432, "disk_processed": 16777216, "disk_remaining": 16777216, "type": 2}
LAB_MEMORY_PHASE: dict[str, Any] = {
    "operation": 5, "time_elapsed": 29247, "downtime": 857, "setup_time": 7,
    "data_total": 235675648, "data_processed": 120621717, "data_remaining": 1560576,
    "memory_total": 202121216, "memory_processed": 87067285, "memory_remaining": 1560576,
    "memory_bps": 4185712, "memory_constant": 28634, "memory_normal": 21152,
    "memory_normal_bytes": 86638592, "memory_dirty_rate": 28, "memory_iteration": 3,
    "memory_postcopy_requests": 0, "memory_page_size": 4096, "disk_total": 33554432,
    "disk_processed": 33554432, "disk_remaining": 0, "type": 2}
# Recorded on the second host (libvirt 11.3, QEMU 10.0) migrating the same guest back: the
# same keys as 9.0's for this job.
PEER_MEMORY_PHASE: dict[str, Any] = {
    "operation": 5, "time_elapsed": 24170, "downtime": 300, "setup_time": 5,
    "data_total": 235675648, "data_processed": 114884453, "data_remaining": 4444160,
    "memory_total": 202121216, "memory_processed": 81330021, "memory_remaining": 4444160,
    "memory_bps": 5051250, "memory_constant": 28507, "memory_normal": 19754,
    "memory_normal_bytes": 80912384, "memory_dirty_rate": 0, "memory_iteration": 1,
    "memory_postcopy_requests": 0, "memory_page_size": 4096, "disk_total": 33554432,
    "disk_processed": 33554432, "disk_remaining": 0, "type": 2}
# What both answer when no job runs.
NO_JOB: dict[str, Any] = {"type": 0}


def by_name(families: list[MetricFamily]) -> dict[str, MetricFamily]:
    return {family.name: family for family in families}


def samples(family: MetricFamily) -> dict[tuple[str, ...], float]:
    return dict(family.samples)


def test_a_lab_migration_in_its_memory_pass_in_base_units() -> None:
    """9.0's figures of a memory pass become bytes, seconds and bytes/s, type and operation."""
    out = by_name(job_families([JobReading("g", LAB_MEMORY_PHASE)], watched=1))
    one = ("g",)
    assert samples(out["libvirt_domain_job_info"]) == {("g", "unbounded", "migration_out"): 1}
    assert samples(out["libvirt_domain_job_elapsed_seconds"]) == {one: 29.247}
    assert samples(out["libvirt_domain_job_expected_downtime_seconds"]) == {one: 0.857}
    assert samples(out["libvirt_domain_job_data_processed_bytes"]) == {one: 120621717}
    assert samples(out["libvirt_domain_job_data_remaining_bytes"]) == {one: 1560576}
    assert samples(out["libvirt_domain_job_data_bytes"]) == {one: 235675648}
    assert samples(out["libvirt_domain_job_memory_processed_bytes"]) == {one: 87067285}
    assert samples(out["libvirt_domain_job_memory_transfer_bytes_per_second"]) == {one: 4185712}
    assert samples(out["libvirt_domain_job_memory_iteration"]) == {one: 3}
    assert samples(out["libvirt_domain_job_memory_dirty_rate_bytes_per_second"]) == {
        one: 28 * 4096}
    assert samples(out["libvirt_domain_job_disk_remaining_bytes"]) == {one: 0}
    assert samples(out["libvirt_domain_job_remaining_seconds"]) == {}  # unbounded: no estimate
    assert samples(out["virtmon_domain_jobs_watched"]) == {(): 1}


def test_the_disk_copy_has_no_dirty_rate_and_libvirt_11_the_same_series() -> None:
    """No dirty rate before the first memory pass; 11.3's answer makes 9.0's series."""
    disk = by_name(job_families([JobReading("g", LAB_DISK_PHASE)]))
    assert samples(disk["libvirt_domain_job_disk_processed_bytes"]) == {("g",): 16777216}
    assert samples(disk["libvirt_domain_job_memory_dirty_rate_bytes_per_second"]) == {}
    lab = job_families([JobReading("g", LAB_MEMORY_PHASE)])
    peer = job_families([JobReading("g", PEER_MEMORY_PHASE)])
    assert [(f.name, len(f.samples)) for f in lab] == [(f.name, len(f.samples)) for f in peer]


def test_no_job_no_series() -> None:
    """A domain whose answer says no job runs has no job series, and the families render."""
    out = job_families([JobReading("idle", NO_JOB)])
    assert [f.name for f in out if f.samples and f.name.startswith("libvirt_")] == []
    assert {f.name for f in out} == {spec.name for spec in FAMILIES}
    render_text(out + job_families([JobReading("g", PEER_MEMORY_PHASE)])[:1])


def watcher() -> tuple[JobWatcher, Inventory]:
    """A watcher that is never run (its supervisor is only awaited in ``run``)."""
    inventory = Inventory()
    never_run = cast(ConnectionSupervisor, None)
    return (JobWatcher(never_run, ConnectionSettings("qemu:///system"), inventory,
                       CollectConfig()), inventory)


def event(kind: str, name: str = "", detail: str | None = None) -> Event:
    return Event(time=0.0, uri="qemu:///system", kind=kind, name=name, detail=detail,
                 domain="g", uuid="u-1")


def test_the_watcher_asks_only_domains_known_to_have_a_job() -> None:
    """Migration events, a job's pause and the control API add a domain; its end removes it."""
    jobs, inventory = watcher()
    jobs.on_event(event("lifecycle", "resumed", "unpaused"))
    jobs.on_event(event("migration_iteration"))
    assert jobs.watched == {"u-1": "g"}
    jobs.readings["u-1"] = JobReading("g", LAB_MEMORY_PHASE)
    jobs.on_event(event("job_completed", detail="migration_out"))
    assert jobs.watched == {} and jobs.readings == {}
    jobs.on_event(event("lifecycle", "started", "migrated"))  # a destination: no statistics
    assert jobs.watched == {}
    jobs.on_event(event("lifecycle", "suspended", "migrated"))
    assert jobs.watched == {"u-1": "g"}
    jobs.on_event(event("lifecycle", "stopped", "migrated"))
    assert jobs.watched == {}

    paused = {"state.state": libvirt.VIR_DOMAIN_PAUSED,
              "state.reason": libvirt.VIR_DOMAIN_PAUSED_MIGRATION}
    by_user = {**paused, "state.reason": libvirt.VIR_DOMAIN_PAUSED_USER}
    jobs.on_snapshot(StatsSnapshot(0.0, frozenset({"state"}), (
        DomainRecord("p", "u-2", paused), DomainRecord("q", "u-3", by_user))))
    assert jobs.watched == {"u-2": "p"}

    inventory.apply_lifecycle("m", "u-4", "started", domain_id=7)
    jobs.expect("m")
    jobs.expect("not-a-domain")
    assert jobs.watched == {"u-2": "p", "u-4": "m"}

    for n in range(MAX_WATCHED + 3):
        jobs.watch(f"x-{n}", f"x{n}")
    assert len(jobs.watched) == MAX_WATCHED and jobs.unwatched_total == 5
