"""domain.migrate on the lab: the destination is a name from the configuration, never a URI.

A daemon on the lab with two configured destinations: one whose libvirtd is not there (a Unix
socket path that does not exist), and a name for the lab itself. The request names one; an
unknown name, a read caller, or a daemon without allow_write are refused before libvirt is
asked, and a destination that cannot be reached is libvirt's own error, the guest still running
where it was; one that never answers is 504 at control.migration_timeout. The migration
itself, between two hosts, is tests/host2/test_migration.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.conftest import call
from tests.control.conftest import Env, daemon_env
from tests.control.peers import probe, unused_ids
from virtmon.events.model import AUDIT_KIND

pytestmark = pytest.mark.lab


def destinations(short_tmp: Path, lab: str) -> dict[str, str]:
    """``gone``: a libvirtd that is not there; ``home``: the lab itself."""
    return {"gone": f"qemu+unix:///system?socket={short_tmp}/absent.sock", "home": lab}


def _env(short_tmp: Path, lab: str, **control: Any) -> AsyncIterator[Env]:
    """A daemon on the lab with the two destinations."""
    return daemon_env(short_tmp, lab, migration_destinations=destinations(short_tmp, lab),
                      **control)


@pytest.fixture
async def rw(short_tmp: Path, lab: str) -> AsyncIterator[Env]:
    """A daemon with allow_write on and the two destinations."""
    async for env in _env(short_tmp, lab, allow_write=True):
        yield env


async def audit_record(env: Env, operation: str, timeout: float = 30.0) -> dict[str, Any]:
    """The journal's audit record of ``operation`` (the journal writes it a moment after the
    answer)."""
    deadline = time.monotonic() + timeout
    while True:
        events = await call(env.daemon.journal.read_since, 0, 10_000)
        records = [e.payload for e in events if e.kind == AUDIT_KIND and e.name == operation]
        if records:
            [record] = records
            return record
        assert time.monotonic() < deadline, f"no audit record of {operation}"
        await asyncio.sleep(0.1)


async def _running(lab_conn: Any, name: str) -> bool:
    dom = await call(lab_conn.lookupByName, name)
    return bool((await call(dom.state))[0] == libvirt.VIR_DOMAIN_RUNNING)


async def test_an_unknown_destination_is_400_naming_the_key_and_no_uri(
    rw: Env, lab_domain: str, lab_conn: Any, short_tmp: Path
) -> None:
    """A destination the configuration does not name is 400 with key "destination", listing
    the configured names but none of their URIs; the audit keeps the name the caller gave."""
    problem = await rw.problem("domain.migrate", domain=lab_domain,
                               destination="qemu+tcp://169.254.213.2/system",
                               flags=["live", "peer2peer"])
    assert (problem.status, problem.document["key"]) == (400, "destination"), problem.document
    assert "gone, home" in problem.detail and str(short_tmp) not in problem.detail
    assert await _running(lab_conn, lab_domain)
    record = await audit_record(rw, "domain.migrate")
    assert record["arguments"]["destination"] == "qemu+tcp://169.254.213.2/system"
    assert (record["ok"], record["status"]) == (False, 400)


async def test_a_destination_that_cannot_be_reached_is_a_502_and_the_guest_stays(
    rw: Env, lab_domain: str, lab_conn: Any, short_tmp: Path
) -> None:
    """virtmon opens the configured URI itself: when nothing answers there the answer is a 502
    (the other host failed) with libvirt's own error and code, the audit has the name and not
    the URI, and the guest runs on where it was."""
    problem = await rw.problem("domain.migrate", domain=lab_domain, destination="gone",
                               flags=["live"])
    assert problem.status == 502, problem.document
    assert problem.document["libvirt_code"] == libvirt.VIR_ERR_SYSTEM_ERROR, problem.document
    assert "absent.sock" in problem.detail
    assert await _running(lab_conn, lab_domain)
    record = await audit_record(rw, "domain.migrate")
    assert record["arguments"]["destination"] == "gone"
    assert "absent.sock" not in json.dumps(record["arguments"])


async def test_a_migration_to_the_same_host_is_refused_by_libvirt(
    rw: Env, lab_domain: str, lab_conn: Any
) -> None:
    """The destination connection is really opened and handed to virDomainMigrate3: libvirt
    itself refuses a migration to the host the guest runs on (409/422 with its code)."""
    problem = await rw.problem("domain.migrate", domain=lab_domain, destination="home",
                               flags=["live"])
    assert 400 <= problem.status < 500 and problem.document["libvirt_code"], problem.document
    assert await _running(lab_conn, lab_domain)


async def test_without_allow_write_or_as_a_read_caller_the_migration_is_403(
    short_tmp: Path, lab: str, lab_domain: str, lab_conn: Any
) -> None:
    """With allow_write off even a configured destination is 403; with it on, a read caller is
    403 for want of the write role; libvirt is never asked (the guest stays)."""
    async for env in _env(short_tmp, lab, allow_write=False):
        problem = await env.problem("domain.migrate", domain=lab_domain, destination="home")
        assert problem.status == 403 and "allow_write" in problem.detail, problem.document
    [reader] = unused_ids(1)
    os.chmod(short_tmp, 0o755)  # the reader reaches the socket through it
    async for env in _env(short_tmp, lab, allow_write=True, socket_mode="0666",
                          read_uids=[reader]):
        [answer] = await asyncio.to_thread(probe, env.sock, reader, [
            {"operation": "domain.migrate",
             "arguments": {"domain": lab_domain, "destination": "home"}}])
        assert answer["status"] == 403, answer
        assert answer["document"]["needs"] == "write", answer
    assert await _running(lab_conn, lab_domain)


@contextlib.contextmanager
def silent_libvirtd(path: Path) -> Iterator[None]:
    """A Unix socket at ``path`` that accepts connections and never answers (a hung libvirtd);
    closing it afterwards ends the client's abandoned wait."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


async def test_a_migration_past_its_timeout_is_504_and_the_guest_stays(
    short_tmp: Path, lab: str, lab_domain: str, lab_conn: Any
) -> None:
    """A destination that never answers holds the migration past control.migration_timeout:
    the answer is 504 at that deadline (not the request timeout), the audit says so, and the
    guest runs on where it was."""
    stuck = short_tmp / "stuck.sock"
    with silent_libvirtd(stuck):
        async for env in daemon_env(
                short_tmp, lab, allow_write=True, migration_timeout=2.0,
                migration_destinations={"stuck": f"qemu+unix:///system?socket={stuck}"}):
            started = time.monotonic()
            problem = await env.problem("domain.migrate", domain=lab_domain,
                                        destination="stuck", flags=["live"])
            assert problem.status == 504, problem.document
            assert time.monotonic() - started < 10.0  # the 2 s deadline, not request_timeout (20 s)
            record = await audit_record(env, "domain.migrate")
            assert (record["ok"], record["status"]) == (False, 504), record
    assert await _running(lab_conn, lab_domain)
