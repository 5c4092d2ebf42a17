"""Fixtures shared by the whole suite: libvirt's event implementation, the lab, a running daemon.

``daemon_config`` and ``running_daemon`` come from tests/daemon.py (the benchmarks use them too)
and are imported here, where the tests have always found them.

libvirt accepts one event implementation per process, so it is registered once on the session's
event loop (pyproject.toml runs every test and fixture on that one loop) before any test opens a
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.daemon import daemon_config, running_daemon
from tests.lab import lab as lab_module
from virtmon.virt.eventloop import ThreadSafeEventImpl, register_event_impl


@pytest.fixture(scope="session", autouse=True)
async def event_impl() -> ThreadSafeEventImpl:
    """libvirt's event implementation on the session loop (once per process)."""
    return register_event_impl()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX socket paths are limited to about 100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vm-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# When and where a lab process died or changed unannounced during the run (each also failed the
# test it happened in, or the next one).
LAB_REVIVALS: list[str] = []
# The lab's vital processes as the last lab test left them (None: not seen yet).
LAB_PIDS: dict[str, int | None] = {}


# The only reason a test may skip: something no Debian 12 machine has (a newer libvirt's
# function, say). Any other skip fails the run.
ALLOWED_SKIP = "not on Debian 12: "


@pytest.fixture(scope="session")
def lab() -> str:
    """The lab's libvirtd URI; fails (not skips) when the lab is down: `make lab-up`."""
    if lab_module.libvirtd_pid() is None:
        pytest.fail("the lab's libvirtd is not running: run `make lab-up` (make test does)")
    return lab_module.URI


def lab_changes(before: dict[str, int | None], now: dict[str, int | None]) -> list[str]:
    """Which vital processes of ``before`` are gone or replaced in ``now`` (one not seen before
    is no change)."""
    return [f"{name} (pid {before[name]} -> {pid or 'gone'})" for name, pid in now.items()
            if before.get(name) is not None and pid != before[name]]


def _lab_changes() -> list[str]:
    """Which of the lab's vital processes died or were replaced since :data:`LAB_PIDS`."""
    return lab_changes(LAB_PIDS, lab_module.vital_pids())


def _heal_lab() -> None:
    """Bring dead lab processes back (libvirtd, virtlogd, the base domains) and note the pids."""
    lab_module.up()
    LAB_PIDS.update(lab_module.vital_pids())


@pytest.fixture(autouse=True)
def lab_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each lab test starts and ends with the lab's libvirtd, virtlogd and base domains as the
    test before left them. A death or restart the test did not announce (``kills_libvirtd``)
    fails it, with libvirtd's last log lines; the lab is brought back for the tests after. A
    test that only stalls libvirtd (``stalls_libvirtd``) has no excuse: virtmon must not make a
    stalled libvirtd crash (tests/lab/stall_repro.py)."""
    if request.node.get_closest_marker("lab") is None:
        yield
        return
    request.getfixturevalue("lab")  # the session's first lab test still fails on a down lab
    if not LAB_PIDS:
        LAB_PIDS.update(lab_module.vital_pids())
    before = _lab_changes()
    if before:
        LAB_REVIVALS.append(f"before {request.node.nodeid}: {', '.join(before)}")
        _heal_lab()
        pytest.fail(f"the lab changed before this test: {', '.join(before)}\n"
                    f"{lab_module.log_tail()}", pytrace=False)
    yield
    after = _lab_changes()
    if request.node.get_closest_marker("kills_libvirtd") is not None:
        _heal_lab()
        return
    if after:
        LAB_REVIVALS.append(f"during {request.node.nodeid}: {', '.join(after)}")
        tail = lab_module.log_tail()
        _heal_lab()
        pytest.fail(f"the lab changed during this test: {', '.join(after)}\n{tail}",
                    pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say when a lab process died during the run, and where; name every skip that does not
    give a reason no Debian 12 machine can meet."""
    if LAB_REVIVALS:
        terminalreporter.write_sep("=", "the lab's processes died or changed during the run")
        for where in LAB_REVIVALS:
            terminalreporter.write_line(f"{where} (see {lab_module.LIBVIRTD_LOG.parent})")
    refused = unexplained_skips(terminalreporter.stats.get("skipped", []))
    if refused:
        terminalreporter.write_sep("=", f"skips are failures here (only '{ALLOWED_SKIP}...')")
        for line in refused:
            terminalreporter.write_line(line)


def unexplained_skips(reports: list[Any]) -> list[str]:
    """``nodeid: reason`` of each skip whose reason is not :data:`ALLOWED_SKIP`'s."""
    out = []
    for report in reports:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        if ALLOWED_SKIP not in reason:
            out.append(f"{report.nodeid}: {reason}")
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run with an unexplained skip, or a lab process that died, fails (exit 1). A death
    after the last lab test's check (in a test without the lab marker) is looked for here."""
    if LAB_PIDS and (after := _lab_changes()):
        LAB_REVIVALS.append(f"after the last lab test: {', '.join(after)}\n"
                            f"{lab_module.log_tail(8)}")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skips = reporter is not None and unexplained_skips(reporter.stats.get("skipped", []))
    if exitstatus == 0 and (skips or LAB_REVIVALS):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
async def lab_conn(lab: str) -> AsyncIterator[Any]:
    """A read-write connection for a test's own actions on the lab (call it via threads).

    Per test: a test that kills libvirtd kills every connection open at that moment.
    """
    conn = await asyncio.to_thread(libvirt.open, lab)
    yield conn
    with contextlib.suppress(libvirt.libvirtError):
        await asyncio.to_thread(conn.close)


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking libvirt call of the test's own in a thread (the loop serves the daemon)."""
    return await asyncio.to_thread(fn, *args)


@pytest.fixture
async def lab_domain(lab: str) -> AsyncIterator[str]:
    """A fresh running no-OS domain for one test, always removed afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    conn = await asyncio.to_thread(libvirt.open, lab)
    try:
        await asyncio.to_thread(lab_module.create_domain, conn, name)
        yield name
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            await asyncio.to_thread(conn.close)
        # A new connection: the test may have restarted libvirtd, which ends the first one.
        conn = await asyncio.to_thread(libvirt.open, lab)
        await asyncio.to_thread(lab_module.remove_domain, conn, name)
        await asyncio.to_thread(conn.close)


__all__ = ["call", "daemon_config", "running_daemon"]
