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


# When and where the lab's libvirtd was found dead and started again during the run.
LAB_REVIVALS: list[str] = []


def revive_lab(where: str) -> bool:
    """Start the lab's libvirtd again if it has died (blocking); the run's summary names
    ``where``. libvirt 9.0's libvirtd has segfaulted here, under load, freeing the event
    callbacks of clients that had gone (after a SIGSTOP that keepalive noticed, or as a client
    closed): a libvirt bug that should fail at most the test it hit, not every lab test after."""
    if lab_module.libvirtd_pid() is not None:
        return False
    LAB_REVIVALS.append(where)
    lab_module.up()
    return True


@pytest.fixture(scope="session")
def lab() -> str:
    """The lab's libvirtd URI; fails (not skips) when the lab is down: `make lab-up`."""
    if lab_module.libvirtd_pid() is None:
        pytest.fail("the lab's libvirtd is not running: run `make lab-up` (make test does)")
    return lab_module.URI


@pytest.fixture(autouse=True)
def lab_alive(request: pytest.FixtureRequest) -> None:
    """Once the lab was up, each lab test starts with a running libvirtd (see revive_lab)."""
    if request.node.get_closest_marker("lab") is None:
        return
    request.getfixturevalue("lab")  # the session's first lab test still fails on a down lab
    revive_lab(f"before {request.node.nodeid}")


# The only reason a test may skip: something no Debian 12 machine has (a newer libvirt's
# function, say). Any other skip fails the run (issue: "zero skips as root on Debian 12").
ALLOWED_SKIP = "not on Debian 12: "


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say when the lab's libvirtd had to be started again during the run, and before what;
    name every skip that does not give a reason no Debian 12 machine can meet."""
    if LAB_REVIVALS:
        terminalreporter.write_sep("=", "the lab's libvirtd was found dead and started again")
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
    """A run with an unexplained skip fails (exit 1), whatever else it did."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and exitstatus == 0 and unexplained_skips(
            reporter.stats.get("skipped", [])):
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
