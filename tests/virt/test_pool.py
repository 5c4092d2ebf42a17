"""The collection's connection pool: unwatched reads on a local socket, and their one retry.

A private libvirtd (tests/lab/private_libvirtd.py) is the peer: it is restarted here, which the
lab's libvirtd must not be.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import libvirt
import pytest

from tests.lab.private_libvirtd import PrivateLibvirtd, private_libvirtd
from virtmon.virt.eventloop import ThreadSafeEventImpl
from virtmon.virt.handle import ConnectionSettings
from virtmon.virt.pool import ConnectionPool


@pytest.fixture
def libvirtd(lab: str) -> Iterator[PrivateLibvirtd]:
    """A private libvirtd serving the test driver."""
    with private_libvirtd() as daemon:
        yield daemon


class Calls:
    """``getLibVersion`` as a pool call, remembering each connection it was made on."""

    def __init__(self) -> None:
        self.connections: list[Any] = []

    def __call__(self, conn: Any) -> int:
        self.connections.append(conn)
        return int(conn.getLibVersion())


def test_a_pool_that_may_write_or_reaches_a_remote_host_keeps_its_watch() -> None:
    """Only a pool of reads on a local socket opens unwatched connections."""
    local = ConnectionSettings(uri="qemu:///system")
    assert not ConnectionPool(local, 1, reads=True).watched
    assert ConnectionPool(local, 1).watched
    assert ConnectionPool(ConnectionSettings(uri="qemu+ssh://hv2/system"), 1, reads=True).watched


async def test_a_pool_of_reads_on_a_local_socket_adds_no_watch_to_the_loop(
    libvirtd: PrivateLibvirtd, event_impl: ThreadSafeEventImpl
) -> None:
    """Connections of a reads pool answer calls with no watch or timer of the event
    implementation; a pool that may write registers its socket watch and keepalive timer."""
    settings = ConnectionSettings(uri=libvirtd.uri)
    before = event_impl.live_count
    reads = ConnectionPool(settings, 1, reads=True)
    assert await anyio.to_thread.run_sync(reads.run, Calls()) > 0
    assert event_impl.live_count == before
    writes = ConnectionPool(settings, 1)
    assert await anyio.to_thread.run_sync(writes.run, Calls()) > 0
    assert event_impl.live_count >= before + 2
    await anyio.to_thread.run_sync(reads.reset)
    await anyio.to_thread.run_sync(writes.reset)


async def test_a_read_on_a_connection_libvirtd_dropped_is_made_again_on_a_new_one(
    libvirtd: PrivateLibvirtd,
) -> None:
    """libvirtd restarted between two calls: the unwatched connection still looks alive, its call
    fails, and the pool makes it again on a new connection: the caller sees no error."""
    pool = ConnectionPool(ConnectionSettings(uri=libvirtd.uri), 2, reads=True)
    calls = Calls()
    await anyio.to_thread.run_sync(pool.run, calls)
    await anyio.to_thread.run_sync(libvirtd.restart)
    assert await anyio.to_thread.run_sync(pool.run, calls) > 0
    first, dead, fresh = calls.connections
    assert dead is first and fresh is not first
    assert pool.size == 1
    await anyio.to_thread.run_sync(pool.reset)


async def test_a_failed_call_on_a_live_or_a_fresh_connection_is_not_made_again(
    libvirtd: PrivateLibvirtd,
) -> None:
    """An error libvirt answers (no such domain) is the caller's, on a fresh connection and on a
    reused live one alike: the call is made once each time."""
    pool = ConnectionPool(ConnectionSettings(uri=libvirtd.uri), 2, reads=True)
    tries: list[Any] = []

    def lookup(conn: Any) -> Any:
        tries.append(conn)
        return conn.lookupByName("no-such-domain")

    for _ in range(2):  # fresh, then reused
        with pytest.raises(libvirt.libvirtError):
            await anyio.to_thread.run_sync(pool.run, lookup)
    assert len(tries) == 2 and tries[0] is tries[1]
    await anyio.to_thread.run_sync(pool.reset)


@pytest.mark.parametrize(("reads", "attempts"), [(True, 2), (False, 1)])
async def test_only_a_pool_of_reads_makes_a_call_twice(
    libvirtd: PrivateLibvirtd, reads: bool, attempts: int
) -> None:
    """A call that leaves its reused connection dead is made once more by a pool of reads, and
    only once by a pool that may write: a write must never be repeated."""
    pool = ConnectionPool(ConnectionSettings(uri=libvirtd.uri), 2, reads=reads)
    await anyio.to_thread.run_sync(pool.run, Calls())  # an idle connection to reuse
    tries: list[Any] = []

    def dies_under_the_first_try(conn: Any) -> int:
        tries.append(conn)
        if len(tries) == 1:
            conn.close()  # as libvirt closes a connection whose peer is gone
            raise libvirt.libvirtError("the connection died under the call")
        return int(conn.getLibVersion())

    if reads:
        assert await anyio.to_thread.run_sync(pool.run, dies_under_the_first_try) > 0
    else:
        with pytest.raises(libvirt.libvirtError):
            await anyio.to_thread.run_sync(pool.run, dies_under_the_first_try)
    assert len(tries) == attempts
    await anyio.to_thread.run_sync(pool.reset)
