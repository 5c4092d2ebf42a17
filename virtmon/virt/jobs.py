"""The job watcher: a running domain job's progress (``virDomainGetJobStats``), for the domains
known to have one.

Asking every domain every cycle would be one call per domain per cycle (a thousand on a large
host) for jobs that almost never run, so the watcher keeps a small set of domains known to have
a job, and asks only those, once per ``collect.interval``:

- a job virtmon starts itself: the control API names the domain before a migration runs;
- an event that only a job sends: ``migration_iteration``, or a lifecycle event of a migration's
  source (suspended/migrated, post-copy);
- the bulk statistics: a domain paused for a job (state reason migration, post-copy, save, dump
  or snapshot) in a collection cycle's snapshot, which costs nothing more.

A domain leaves the set when libvirt answers that no job runs, at ``job_completed``, when it stops
or is undefined, or when it is gone. So a job another tool started (virsh) is seen from its first
such event, or from the first cycle that finds the domain paused for it; until then it has no
series: a live migration's disk copy (which comes before the first pass over the memory), a live
dump or save, a backup.

Each domain's call is a worker call with the collection's deadline (``collect.interval`` *
``collect.deadline_ratio``) on connections of the watcher's own (read-only), never the cycle's.
The last readings join every cycle's exposition (a :class:`~virtmon.scheduler.MetricSource`);
virtmon/collectors/jobs.py turns them into families.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import libvirt
import structlog
from anyio.abc import TaskStatus

from virtmon.collectors.jobs import JobReading, job_families, running
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.component import Restart
from virtmon.events.model import Event
from virtmon.exposition.family import MetricFamily
from virtmon.virt.calls import LibvirtCaller
from virtmon.virt.connection import ConnectionSupervisor
from virtmon.virt.handle import ConnectionSettings
from virtmon.virt.inventory import Inventory
from virtmon.virt.pool import ConnectionPool
from virtmon.virt.rounds import run_rounds
from virtmon.virt.states import PAUSED

if TYPE_CHECKING:
    from virtmon.config import CollectConfig

log = structlog.get_logger("virtmon.virt.jobs", component="jobs")

# At most this many domains are asked each round; more are counted and left out (a host that
# migrates hundreds of domains at once is not one to add a call per domain to).
MAX_WATCHED = 64
# Pause reasons that mean a job holds the domain (virDomainPausedReason).
JOB_PAUSE_REASONS = frozenset(getattr(libvirt, f"VIR_DOMAIN_PAUSED_{name}") for name in (
    "MIGRATION", "SAVE", "DUMP", "SNAPSHOT", "POSTCOPY"))
# Lifecycle events of a migration's source: (event, detail). The destination's started/migrated
# is not one: libvirt keeps an incoming migration's statistics to the source ("migration
# statistics are available only on the source host").
MIGRATION_LIFECYCLE = frozenset({("suspended", "migrated"), ("suspended", "postcopy"),
                                 ("resumed", "postcopy")})
# Answers that mean this domain's job has no statistics here: nothing to ask again.
NO_STATISTICS = frozenset({libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_UNSUPPORTED})
# Lifecycle events after which the domain has no job.
GONE = frozenset({"stopped", "undefined"})


def read_job(conn: Any, uuid: str) -> dict[str, Any] | None:
    """The domain's job statistics (blocking); None when the domain is gone or its job has none
    here."""
    try:
        stats: dict[str, Any] = conn.lookupByUUIDString(uuid).jobStats(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in NO_STATISTICS:
            return None
        raise
    return stats


class JobWatcher:
    """Reads the job statistics of the domains known to have a job; a ``MetricSource``."""

    def __init__(self, supervisor: ConnectionSupervisor, settings: ConnectionSettings,
                 inventory: Inventory, collect: CollectConfig) -> None:
        self.supervisor = supervisor
        self.inventory = inventory
        self.caller = LibvirtCaller(capacity=1, max_abandoned=collect.max_abandoned_calls)
        # One connection for the call in progress, plus one per call that may hang (ADR 0001).
        self.pool = ConnectionPool(replace(settings, readonly=True),
                                   1 + collect.max_abandoned_calls, reads=True)
        self._apply(collect)
        self.watched: dict[str, str] = {}  # UUID -> name, domains known to have a job
        self.readings: dict[str, JobReading] = {}  # UUID -> the last answer of a running job
        self.unwatched_total = 0

    def _apply(self, collect: CollectConfig) -> None:
        self.interval = collect.interval
        self.deadline = collect.interval * collect.deadline_ratio

    async def reconfigure(self, collect: CollectConfig) -> Restart:
        """Take a reloaded interval and deadline from the next round on."""
        self._apply(collect)
        return ()

    # -- which domains have a job -----------------------------------------------------------

    def watch(self, uuid: str, name: str) -> None:
        """Ask this domain from the next round on (a full set counts it instead)."""
        if uuid in self.watched:
            return
        if len(self.watched) >= MAX_WATCHED:
            self.unwatched_total += 1
            return
        self.watched[uuid] = name

    def forget(self, uuid: str) -> None:
        """The domain has no job (any more): no question, no series."""
        self.watched.pop(uuid, None)
        self.readings.pop(uuid, None)

    def expect(self, key: str) -> None:
        """A job virtmon is about to start on the domain called ``key`` (name, UUID or id)."""
        domain = self.inventory.find(key)
        if domain is not None:
            self.watch(domain.uuid, domain.name)

    def on_event(self, event: Event) -> None:
        """Bus listener (loop thread): events that only a job sends, and the job's end."""
        if event.uuid is None or event.domain is None:
            return
        if event.kind == "migration_iteration" or (
                event.kind == "lifecycle" and (event.name, event.detail) in MIGRATION_LIFECYCLE):
            self.watch(event.uuid, event.domain)
        elif event.kind == "job_completed" or (event.kind == "lifecycle"
                                               and event.name in GONE):
            self.forget(event.uuid)

    def on_snapshot(self, snapshot: StatsSnapshot) -> None:
        """Scheduler listener (loop thread): domains a cycle found paused for a job."""
        for record in snapshot.domains:
            stats = record.stats
            if (stats.get("state.state") == PAUSED
                    and stats.get("state.reason") in JOB_PAUSE_REASONS):
                self.watch(record.uuid, record.name)

    # -- asking -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """A round every interval while connected; ``started`` at once (never holds start-up)."""
        task_status.started()
        await run_rounds(self.supervisor, lambda: self.interval, self.ask_round)

    async def ask_round(self) -> None:
        """Ask each watched domain once; drop those whose job is over."""
        for uuid, name in list(self.watched.items()):
            try:
                stats = await self.caller.call_with_deadline(
                    self.deadline, self.pool.run, read_job, uuid)
            except Exception as exc:
                # No reading this round (a stuck or failed call); the domain stays watched
                # until an event or an answer says the job is over.
                log.info("virtmon.jobs.read_failed", domain=name, error=str(exc))
                self.readings.pop(uuid, None)
                continue
            if uuid not in self.watched:  # the job ended while asked: keep that
                continue
            if stats is None or not running(stats):
                self.forget(uuid)
            else:
                self.readings[uuid] = JobReading(name, stats)

    def families(self) -> list[MetricFamily]:
        """The last readings, for the cycle's exposition (loop thread, no I/O)."""
        return job_families(list(self.readings.values()), len(self.watched),
                            self.unwatched_total)

    def close(self) -> None:
        """Close the idle connections (blocking)."""
        self.pool.reset()
