"""The collection cycle's two reads: made at once, a failure of either is the cycle's own, and
the first cycle after libvirtd restarted is a fresh one."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import libvirt
import pytest

import virtmon.scheduler as scheduler_module
from tests.conftest import daemon_config, running_daemon
from tests.lab.private_libvirtd import PrivateLibvirtd, private_libvirtd
from tests.waiting import next_cycle, wait_until
from virtmon.collectors.snapshot import DomainRecord
from virtmon.scheduler import Scheduler, together
from virtmon.virt.stats import HostRead, SnapshotRequest, read_domains, read_host

# The reads wait this long for each other: a cycle that made them one after the other fails.
WAIT = 10.0
ONE_CYCLE = {"interval": 3600.0, "deadline_ratio": 0.1, "collectors": {"admin": False}}


@asynccontextmanager
async def after_first_cycle(state: Path) -> AsyncIterator[Scheduler]:
    """The scheduler of a daemon on ``test:///default`` whose first cycle has ended."""
    cfg = daemon_config(state, libvirt={"uri": "test:///default"}, collect=ONE_CYCLE)
    async with running_daemon(cfg) as daemon:
        while daemon.scheduler.stats.cycles < 1:
            await next_cycle(daemon.scheduler)
        yield daemon.scheduler


async def test_together_raises_the_failing_ones_own_error_after_both_ended() -> None:
    """A raised failure is raised as itself (no exception group), the first's when both fail,
    and only once the other has ended: neither is cancelled."""
    ended: list[str] = []

    async def slow() -> int:
        await anyio.sleep(0.2)
        ended.append("slow")
        return 1

    async def failing() -> int:
        raise ValueError("bulk call failed")

    async def other_failing() -> int:
        raise KeyError("node call failed")

    with pytest.raises(ValueError, match="bulk call failed"):
        await together(failing, slow)
    assert ended == ["slow"]
    with pytest.raises(ValueError, match="bulk call failed"):
        await together(slow, failing)
    assert ended == ["slow", "slow"]
    with pytest.raises(ValueError):
        await together(failing, other_failing)
    assert await together(slow, slow) == (1, 1)


async def test_together_takes_an_exception_returned_as_a_result() -> None:
    """An exception object returned (the admin helper's answer may be one: its collector then
    fails alone) is a result like any other, not a failure of the pair."""
    refused = PermissionError("admin socket refused")

    async def answer() -> Exception:
        return refused

    async def value() -> int:
        return 1

    assert await together(value, answer) == (1, refused)
    assert await together(answer, value) == (refused, 1)


async def test_the_host_is_read_while_the_bulk_call_is_still_out(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node and interface calls do not wait behind the bulk call: a bulk call that returns
    only once the host has been read still makes a fresh cycle."""
    host_read = threading.Event()

    def domains_after_host(conn: Any, request: SnapshotRequest) -> tuple[DomainRecord, ...]:
        if not host_read.wait(WAIT):
            raise libvirt.libvirtError("the host was not read while the bulk call was out")
        return read_domains(conn, request)

    def host(conn: Any, request: SnapshotRequest) -> HostRead:
        read = read_host(conn, request)
        host_read.set()
        return read

    monkeypatch.setattr(scheduler_module, "read_domains", domains_after_host)
    monkeypatch.setattr(scheduler_module, "read_host", host)
    async with after_first_cycle(short_tmp) as scheduler:
        assert scheduler.stats.failures == 0
        assert scheduler.snapshot is not None and scheduler.snapshot.domains
        assert scheduler.snapshot.node is not None


async def test_a_failed_host_read_fails_the_cycle_with_its_own_error(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host read that fails while the bulk call succeeds makes the cycle a failed one,
    logged with libvirt's own message: no half snapshot is published."""
    logged: list[dict[str, Any]] = []

    def failing_host(conn: Any, request: SnapshotRequest) -> HostRead:
        raise libvirt.libvirtError("node statistics refused")

    monkeypatch.setattr(scheduler_module, "read_host", failing_host)
    monkeypatch.setattr(scheduler_module.log, "warning",
                        lambda event, **fields: logged.append({"event": event, **fields}))
    async with after_first_cycle(short_tmp) as scheduler:
        assert scheduler.stats.failures == 1
        assert scheduler.snapshot is None
    assert {"event": "virtmon.collect.failed", "error": "node statistics refused"} in logged


@pytest.fixture
def libvirtd(lab: str) -> Iterator[PrivateLibvirtd]:
    """A private libvirtd serving the test driver (restarted here; the lab's must not be)."""
    with private_libvirtd() as daemon:
        yield daemon


async def test_the_first_cycle_after_libvirtd_restarted_is_fresh(
    short_tmp: Path, libvirtd: PrivateLibvirtd
) -> None:
    """The cycle's pooled connections hear nothing of a restart (no watch): the first cycle
    after the daemon has reconnected finds them dead, reads again on new ones, and publishes a
    fresh snapshot instead of failing."""
    cfg = daemon_config(short_tmp, libvirt={"uri": libvirtd.uri}, collect=ONE_CYCLE)
    async with running_daemon(cfg) as daemon:
        scheduler, supervisor = daemon.scheduler, daemon.supervisor
        await scheduler.cycle()
        assert scheduler.stats.failures == 0 and daemon.pool.size == 2
        since = supervisor.connected_since
        await anyio.to_thread.run_sync(libvirtd.restart)
        restarted = time.time()
        await wait_until(lambda: supervisor.connected and supervisor.connected_since != since,
                         30)
        await scheduler.cycle()
        assert scheduler.stats.failures == 0
        assert scheduler.snapshot is not None and scheduler.snapshot.taken_at > restarted
        assert scheduler.snapshot.domains and scheduler.snapshot.node is not None


async def test_a_stalled_libvirtd_abandons_both_reads_within_the_bound_and_cycles_resume(
    short_tmp: Path, libvirtd: PrivateLibvirtd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While libvirtd is stopped, cycles abandon both their reads at the deadline until
    max_abandoned_calls are stuck, then start none; the pool has a connection for every read
    started (none fails as busy). Once libvirtd continues, a cycle is fresh again."""
    errors: list[str] = []
    monkeypatch.setattr(scheduler_module.log, "warning",
                        lambda event, **fields: errors.append(str(fields.get("error"))))
    collect = {**ONE_CYCLE, "interval": 0.4, "deadline_ratio": 0.5, "max_abandoned_calls": 3}
    cfg = daemon_config(short_tmp, libvirt={"uri": libvirtd.uri}, collect=collect)
    async with running_daemon(cfg) as daemon:
        scheduler, caller = daemon.scheduler, daemon.caller
        with libvirtd.paused():
            failures = scheduler.stats.failures
            await wait_until(lambda: scheduler.stats.failures >= failures + 4, 30)
            # Two cycles of two reads each started (2, then 2 more with 2 < 3 stuck): four
            # stuck, each holding a connection of the pool (its size is the bound + 1).
            assert caller.abandoned_outstanding >= 4 and daemon.pool.size == 4
        continued = time.time()
        await wait_until(lambda: scheduler.snapshot is not None
                         and scheduler.snapshot.taken_at > continued, 30)
    assert errors and not [e for e in errors if "busy" in e]
    assert [e for e in errors if "abandoned libvirt calls are still blocked" in e]
