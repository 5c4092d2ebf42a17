"""The collection cycle: every ``interval`` seconds, one snapshot, pure collectors, publish.

The cycle's libvirt calls run in two worker threads at once (the bulk call; node and interface
calls), each with the cycle's deadline (default 80 % of the interval). A call that overruns is
abandoned (counted; the number still blocked is bounded by the caller) and the next cycle
still starts on time; NOWAIT lets it skip domains the stuck call still holds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry

from virtmon.admin.stats import AdminStats
from virtmon.collectors import DEFAULT_ENABLED, build_collectors, stats_flags_for, stats_groups_for
from virtmon.collectors.base import FACTS_EVERY, Collector, run_collectors
from virtmon.collectors.snapshot import DomainInfo, LibvirtInfo, StatsSnapshot
from virtmon.component import Restart
from virtmon.config import CollectConfig, keeping
from virtmon.events.counters import EventCounts
from virtmon.exposition.cache import Exposition, Variant
from virtmon.exposition.family import MetricFamily
from virtmon.exposition.render import CarriedSeries
from virtmon.selfmetrics import CycleStats
from virtmon.ticks import sleep_to_next_tick
from virtmon.virt.calls import LibvirtCaller
from virtmon.virt.connection import ConnectionSupervisor
from virtmon.virt.pool import ConnectionPool
from virtmon.virt.stats import (
    HostFacts,
    SnapshotRequest,
    disconnected_snapshot,
    read_domains,
    read_host,
    snapshot_of,
)

log = structlog.get_logger("virtmon.scheduler").bind(component="scheduler")

A = TypeVar("A")
B = TypeVar("B")


async def together(first: Callable[[], Awaitable[A]],
                   second: Callable[[], Awaitable[B]]) -> tuple[A, B]:
    """Both results, the two awaited at once. A failure of either is raised as it is (the
    first's if both fail) once both have ended: neither is cancelled, as each is bounded by a
    deadline of its own, and a task group would wrap the error in an exception group. (A
    result may itself be an exception object: the admin helper's answer can be.)"""
    first_failure: list[Exception] = []
    second_result: list[B] = []
    second_failure: list[Exception] = []

    async def run_second() -> None:
        try:
            second_result.append(await second())
        except Exception as exc:
            second_failure.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(run_second)
        try:
            first_result = await first()
        except Exception as exc:
            first_failure.append(exc)
    if first_failure or second_failure:
        raise (first_failure or second_failure)[0]
    return first_result, second_result[0]


def tell(listeners: Iterable[Callable[[A], None]], news: A) -> None:
    """Call each listener with ``news``; one that fails is logged and the others still hear."""
    for listener in listeners:
        try:
            listener(news)
        except Exception:
            log.exception("virtmon.collect.listener_failed")


class MetricSource(Protocol):
    """Series published with every cycle's exposition that no collector makes (virtmon's own,
    the alerts', the control API's): read on the loop, no I/O."""

    def families(self) -> list[MetricFamily]:
        """This moment's families."""
        ...


def enabled_collectors(collect: CollectConfig) -> list[str]:
    """The default collectors, adjusted by ``collect.collectors`` (name = true/false)."""
    wanted = set(DEFAULT_ENABLED)
    for name, enabled in collect.collectors.items():
        (wanted.add if enabled else wanted.discard)(name)
    return sorted(wanted)


class Scheduler:
    """Runs collection cycles on a fixed tick and publishes each cycle's exposition."""

    def __init__(
        self,
        supervisor: ConnectionSupervisor,
        pool: ConnectionPool,
        caller: LibvirtCaller,
        collect: CollectConfig,
        sources: Sequence[MetricSource],
        stats: CycleStats,
        domain_info: Callable[[], Mapping[str, DomainInfo]] = dict,
        admin: Callable[[float], Awaitable[AdminStats]] | None = None,
        event_counts: Callable[[], EventCounts] | None = None,
        client_metrics: CollectorRegistry | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.pool = pool
        self.caller = caller
        self._apply(collect)
        self.sources = sources
        # Called on the loop with each fresh cycle's families (the alert thresholds); no I/O.
        self.cycle_listeners: list[Callable[[Sequence[MetricFamily]], None]] = []
        # Called on the loop with each fresh cycle's snapshot (the job watcher); no I/O.
        self.snapshot_listeners: list[Callable[[StatsSnapshot], None]] = []
        self.domain_info = domain_info
        self.admin = admin
        # The admin helper's last answer and when it was asked (monotonic): reused by the cycles
        # until ``collect.admin_interval`` has passed; an error is asked again next cycle.
        self._admin_answer: AdminStats | Exception | None = None
        self._admin_asked_at = 0.0
        # Read once per connection (the connection's connected_since): versions and hypervisor;
        # and every FACTS_EVERY cycles: node info, CPU map, host interfaces.
        self._known_since: float | None = None
        self._libvirt_info: LibvirtInfo | None = None
        self._facts: HostFacts | None = None
        self._facts_age = 0
        self.event_counts = event_counts
        # Rendered by prometheus_client into each exposition (the process_* series).
        self.client_metrics = client_metrics
        self.stats = stats
        # Each cycle's renders start from the series the last one wrote.
        self.carried_series = CarriedSeries()
        self.exposition = Exposition([])
        self.snapshot: StatsSnapshot | None = None
        self._cycle_done = anyio.Condition()

    def _apply(self, collect: CollectConfig) -> None:
        self.collect = collect
        self.interval = collect.interval
        self.admin_interval = collect.admin_interval
        # A cycle's libvirt calls are abandoned after this; the admin helper's answer too.
        self.deadline = collect.interval * collect.deadline_ratio
        self.backing_chain = collect.block_backing_chain  # every layer of each disk
        self.use_collectors(enabled_collectors(collect))

    async def reconfigure(self, collect: CollectConfig) -> Restart:
        """Take a reloaded ``[collect]`` from the next cycle on. Turning the admin collector on
        or off waits for a restart (its helper process is started with the daemon): it stays
        as it runs."""
        if ("admin" in enabled_collectors(collect)) == (self.admin is not None):
            self._apply(collect)
            return ()
        self._apply(keeping(collect, self.collect, ["collectors.admin"]))
        return ("collect.collectors.admin",)

    def status(self) -> dict[str, Any]:
        """The ``collection`` part of the daemon's status."""
        return {
            "interval": self.interval,
            "cycles": self.stats.cycles,
            "last_duration": self.stats.last_duration,
            "last_success": self.stats.last_success,
            "failures": self.stats.failures,
            "samples": self.exposition.samples,
        }

    def own_families(self) -> list[MetricFamily]:
        """Every source's families (published with each cycle, and before the first)."""
        return [family for source in self.sources for family in source.families()]

    def use_collectors(self, names: Iterable[str]) -> None:
        """Collect with these collectors from the next cycle on, asking libvirt for just what
        they read (at start, and on a reload)."""
        names = list(names)
        self.collectors: Sequence[Collector] = build_collectors(names)
        self.stats_flags = stats_flags_for(names)
        self.requested_groups = frozenset(stats_groups_for(names))
        self.with_node = "node" in names
        self.with_interfaces = "host_interfaces" in names

    def publish_own_metrics(self) -> None:
        """Publish virtmon's own metrics alone, for the scrapes that come before the first cycle
        is done: an empty body would pass for a target that has no series at all."""
        self.exposition = Exposition(self.own_families(), self.client_metrics,
                                     self.carried_series)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Cycle forever on a fixed tick; ``started`` after the first cycle."""
        next_tick = time.monotonic()
        await self.cycle()
        task_status.started()
        while True:
            next_tick = await sleep_to_next_tick(next_tick, self.interval)
            await self.cycle()

    async def wait_cycle(self) -> None:
        """Return after the next cycle has been published (tests, tools)."""
        async with self._cycle_done:
            await self._cycle_done.wait()

    async def cycle(self) -> None:
        """One collection; a failure anywhere keeps the previous exposition and is counted."""
        try:
            await self._cycle()
        except Exception:
            self.stats.failures += 1
            log.exception("virtmon.collect.cycle_failed")
        async with self._cycle_done:
            self._cycle_done.notify_all()

    async def _cycle(self) -> None:
        """Snapshot, collectors, publish."""
        started = time.monotonic()
        admin: AdminStats | Exception | None
        if self._admin_due(started):
            (snapshot, fresh), admin = await together(self._snapshot, self._ask_admin)
        else:  # the last answer stands: no task group, no helper round trip
            (snapshot, fresh), admin = await self._snapshot(), self._admin_answer
        events = self.event_counts() if self.event_counts is not None else None
        snapshot = dataclasses.replace(snapshot, admin=admin, events=events)
        # The loop's own series are read here; the collectors (pure, slow at thousands of
        # domains) and the forms asked for during the last cycle are one worker thread's work:
        # one hand-off per cycle. Rendering those forms before the new exposition is published
        # (scrapes meanwhile get the last one) means steady scrapers never wait for a render;
        # other forms render on their first request, none if nobody scrapes.
        exposition = await anyio.to_thread.run_sync(
            self._exposition, snapshot, self.own_families(), frozenset(self.exposition.asked))
        self.stats.cycles += 1
        self.stats.last_duration = time.monotonic() - started
        if fresh:
            self.stats.last_success = time.time()
            self.snapshot = snapshot
            tell(self.cycle_listeners, exposition.families)
            tell(self.snapshot_listeners, snapshot)
        else:
            self.stats.failures += 1
        self.exposition = exposition
        log.debug("virtmon.collect.cycle", seconds=round(self.stats.last_duration, 4),
                  domains=len(snapshot.domains), samples=self.exposition.samples, fresh=fresh)

    def _exposition(self, snapshot: StatsSnapshot, own: list[MetricFamily],
                    asked: frozenset[Variant]) -> Exposition:
        """The collectors' families and ``own`` as an exposition, with the ``asked`` forms
        rendered (blocking: in a worker thread)."""
        families, _outcomes = run_collectors(self.collectors, snapshot)
        families.extend(own)
        exposition = Exposition(families, self.client_metrics, self.carried_series)
        exposition.render_ahead(asked)
        return exposition

    def _admin_due(self, now: float) -> bool:
        """Whether this cycle asks the admin helper: the admin collector is on, and its last
        answer is an error, or none, or ``admin_interval`` old. Half an interval of slack, so
        that a cycle's jitter does not push a read a whole interval later."""
        if self.admin is None:
            return False
        if not isinstance(self._admin_answer, AdminStats):
            return True
        return now - self._admin_asked_at >= self.admin_interval - self.interval / 2

    async def _ask_admin(self) -> AdminStats | Exception:
        """The admin helper's statistics, or the error it gave (the collector reports it)."""
        assert self.admin is not None
        self._admin_asked_at = time.monotonic()
        try:
            self._admin_answer = await self.admin(self.deadline)
        except Exception as exc:
            self._admin_answer = exc
        return self._admin_answer

    async def _read(self, read: Callable[[Any, SnapshotRequest], A],
                    request: SnapshotRequest) -> A:
        """One of the cycle's two reads, on a pooled connection within the cycle's deadline."""
        return await self.caller.call_with_deadline(self.deadline, self.pool.run, read, request)

    async def _snapshot(self) -> tuple[StatsSnapshot, bool]:
        """This cycle's snapshot and whether it is fresh.

        While connected, a cycle whose call failed or overran re-exports the last good snapshot
        (its age is ``virtmon_collection_last_success_timestamp_seconds``) rather than making
        every domain vanish for one cycle; while disconnected, only ``libvirt_up 0`` is true.
        """
        uri = self.supervisor.settings.uri
        if not self.supervisor.connected:
            return disconnected_snapshot(uri), False
        try:
            since = self.supervisor.connected_since
            same_connection = self._known_since == since
            known = self._libvirt_info if same_connection else None
            facts = self._facts if same_connection and self._facts_age < FACTS_EVERY else None
            request = SnapshotRequest(
                uri=uri, stats_flags=self.stats_flags, requested_groups=self.requested_groups,
                domain_info=self.domain_info(), with_node=self.with_node,
                with_interfaces=self.with_interfaces, known_info=known, facts=facts,
                backing_chain=self.backing_chain,
            )
            records, host = await together(partial(self._read, read_domains, request),
                                           partial(self._read, read_host, request))
            snapshot = snapshot_of(request, records, host)
            if facts is None:
                self._facts, self._facts_age = HostFacts.of(snapshot), 0
            self._facts_age += 1
            self._known_since, self._libvirt_info = since, snapshot.libvirt
        except Exception as exc:
            log.warning("virtmon.collect.failed", error=str(exc))
            if self.snapshot is not None and self.supervisor.connected:
                return self.snapshot, False
            return disconnected_snapshot(uri), False
        return snapshot, True
