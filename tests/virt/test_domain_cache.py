"""The domain XML cache: metadata labels, event-driven refresh, resync, and failures."""

from __future__ import annotations

import asyncio
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import libvirt
import pytest

from tests.waiting import wait_until
from virtmon.events.model import Event
from virtmon.virt.calls import LibvirtCaller
from virtmon.virt.domain_cache import DomainInfoCache, MetadataLabels, read_many, read_one
from virtmon.virt.handle import SharedConnection

NOVA = "http://openstack.org/xmlns/libvirt/nova/1.1"


@dataclass
class Supervisor:
    """The two things the cache asks of the connection supervisor."""

    conn: SharedConnection | None
    connected: bool = True

    async def wait_connected(self) -> None:
        """Never called while connected."""


CACHE_PROBE_XML = """<domain type='test'><name>cache-probe</name><memory>65536</memory>
<os><type>hvm</type></os></domain>"""


def event(kind: str, name: str, uuid: str) -> Event:
    """A domain event."""
    return Event(time=0.0, uri="test:///default", kind=kind, name=name, uuid=uuid, domain="x")


@pytest.fixture
def conn() -> Any:
    """A read-write connection to the test driver's shared default instance."""
    connection = libvirt.open("test:///default")
    yield connection
    connection.close()


def test_metadata_labels_read_namespaced_elements_and_attributes() -> None:
    """A path with a namespace prefix and a trailing /@attribute yields the attribute's value."""
    labels = MetadataLabels(
        {"project": "/domain/metadata/nova:instance/nova:owner/nova:project/@uuid",
         "flavor": "metadata/nova:instance/nova:flavor/@name",
         "missing": "metadata/nova:instance/nova:nothing"},
        {"nova": NOVA},
    )
    root = ET.fromstring(
        f"<domain><metadata><nova:instance xmlns:nova='{NOVA}'>"
        "<nova:flavor name='m1.small'/><nova:owner><nova:project uuid='p-1'>demo"
        "</nova:project></nova:owner></nova:instance></metadata></domain>"
    )
    assert labels.read(root) == {"project": "p-1", "flavor": "m1.small"}


async def test_resync_reads_every_domain_and_undefined_drops_one(conn: Any) -> None:
    """A resync fills the cache from XML; an undefined event drops the domain without a call."""
    shared = SharedConnection(conn)
    cache = DomainInfoCache(Supervisor(shared), shared, LibvirtCaller(),  # type: ignore[arg-type]
                            MetadataLabels({}, {}), resync_interval=600)
    await cache._refresh(shared)
    test = next(info for info in cache.info.values() if info.name == "test")
    assert test.os_type == "hvm" and test.persistent
    cache.on_event(event("lifecycle", "undefined", test.uuid))
    assert test.uuid not in cache.info


async def test_a_failed_refresh_keeps_what_was_marked() -> None:
    """When the refresh's call fails, the marked domains stay marked for the next try."""
    closed = SharedConnection(libvirt.open("test:///default"))
    closed.close([])  # every later call on it is refused
    cache = DomainInfoCache(Supervisor(closed), closed, LibvirtCaller(),  # type: ignore[arg-type]
                            MetadataLabels({}, {}), resync_interval=600)
    cache._resync_due = False
    cache.on_event(event("metadata_change", "element", "u-1"))
    with pytest.raises(Exception, match="closing"):
        await cache._refresh(closed)
    assert cache._dirty == {"u-1"}
    cache._resync_due = True
    with pytest.raises(Exception, match="closing"):
        await cache._refresh(closed)
    assert cache._resync_due


async def test_the_cache_makes_no_call_on_the_events_connection(short_tmp: Any) -> None:
    """A daemon's cache resyncs and refreshes a newly defined domain with no call on the events
    connection: a call queued there when libvirtd stalls made libvirt 9.0's libvirtd close the
    client twice at once and die (the events connection carries only its subscription and
    listing)."""
    from tests.daemon import daemon_config, running_daemon
    from tests.waiting import wait_until

    calls: list[str] = []
    async with running_daemon(daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                                            collect={"collectors": {"admin": False}})) as daemon:
        events_connection = daemon.supervisor.conn
        assert events_connection is not None
        original = events_connection.run

        def recording_run(fn: Any, *args: Any) -> Any:
            calls.append(getattr(fn, "__name__", repr(fn)))
            return original(fn, *args)

        events_connection.run = recording_run  # type: ignore[method-assign]
        test = await asyncio.to_thread(libvirt.open, "test:///default")
        try:
            dom = await asyncio.to_thread(test.defineXML, CACHE_PROBE_XML)
            uuid = await asyncio.to_thread(dom.UUIDString)
            await wait_until(lambda: uuid in daemon.domain_cache.info, 10, 0.05)
            resyncs = daemon.domain_cache.resyncs
            daemon.domain_cache._resync_due = True
            daemon.domain_cache._wake.set()
            await wait_until(lambda: daemon.domain_cache.resyncs > resyncs, 10, 0.05)
        finally:
            await asyncio.to_thread(dom.undefine)
            await asyncio.to_thread(test.close)
    assert calls == []


class StuckConnection(SharedConnection):
    """The test driver's connection, where every call hangs until ``release`` is set: a hung
    libvirtd as the cache sees it (the shared lab's libvirtd is not for stopping)."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.release = threading.Event()

    def run(self, fn: Any, *args: Any) -> Any:
        """Wait for ``release``, then call (blocking)."""
        self.release.wait(60)
        return super().run(fn, *args)


async def test_the_first_read_holds_start_up_only_as_long_as_allowed(conn: Any) -> None:
    """With libvirt hanging, `run(first_read_within=S)` reports started after about S seconds
    (the first cycle goes ahead without the facts), and fills the cache once calls return."""
    stuck = StuckConnection(conn)
    cache = DomainInfoCache(Supervisor(stuck), stuck, LibvirtCaller(),  # type: ignore[arg-type]
                            MetadataLabels({}, {}), resync_interval=600)
    async with anyio.create_task_group() as group:
        with anyio.fail_after(30):
            await group.start(cache.run, 0.2)
        assert cache.info == {}
        stuck.release.set()
        await wait_until(lambda: any(i.name == "test" for i in cache.info.values()), 30, 0.05)
        group.cancel_scope.cancel()


class ChunkGate(SharedConnection):
    """The test driver's connection, where each resync chunk after the first waits for a
    ``let_through``: a resync of many domains, held in progress for as long as the test likes."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.chunks_started = 0
        self._permits = threading.Semaphore(0)

    def let_through(self, chunks: int = 1) -> None:
        """Let that many more held chunks go."""
        for _ in range(chunks):
            self._permits.release()

    def run(self, fn: Any, *args: Any) -> Any:
        """A chunk (read_many) after the first waits for a permit, then the call (blocking)."""
        if fn is read_many:
            self.chunks_started += 1
            if self.chunks_started > 1:
                self._permits.acquire(timeout=60)
        return super().run(fn, *args)


async def test_an_event_is_handled_while_a_long_resync_is_in_progress(conn: Any) -> None:
    """A domain defined during a resync is in the cache after the next chunk, while the resync
    still has chunks to read, and stays in it when the resync (whose listing lacks it) ends."""
    extra = [await asyncio.to_thread(conn.defineXML, CACHE_PROBE_XML.replace(
        "cache-probe", f"resync-filler-{i}")) for i in range(2)]
    gate = ChunkGate(conn)
    cache = DomainInfoCache(Supervisor(gate), gate, LibvirtCaller(),  # type: ignore[arg-type]
                            MetadataLabels({}, {}), resync_interval=600, resync_chunk=1)
    probe = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(cache._refresh, gate)  # a resync: 3 domains, 3 chunks
            await wait_until(lambda: gate.chunks_started == 2, 30, 0.01)  # the 2nd is held
            probe = await asyncio.to_thread(conn.defineXML, CACHE_PROBE_XML)
            uuid = await asyncio.to_thread(probe.UUIDString)
            cache.on_event(event("lifecycle", "defined", uuid))
            gate.let_through(1)
            await wait_until(lambda: uuid in cache.info, 30, 0.01)
            assert gate.chunks_started == 3 and cache.resyncs == 0  # the 3rd chunk still held
            gate.let_through(1)
        assert cache.resyncs == 1 and uuid in cache.info
        assert {i.name for i in cache.info.values()} >= {"resync-filler-0", "resync-filler-1"}
    finally:
        for dom in [*extra, *([probe] if probe is not None else [])]:
            await asyncio.to_thread(dom.undefine)


class RecordingConnection(SharedConnection):
    """The test driver's connection, recording the UUID of each single-domain read."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.read: list[str] = []

    def run(self, fn: Any, *args: Any) -> Any:
        """Record a read_one's UUID, then call (blocking)."""
        if fn is read_one:
            self.read.append(args[0])
        return super().run(fn, *args)


GONE = "00000000-0000-4000-8000-00000000dead"


async def test_a_domain_undefined_soon_after_it_was_defined_is_never_read(conn: Any) -> None:
    """Marked domains are read a moment after the first mark: one defined and undefined within
    it (a storm of defines and undefines) costs no read; one still defined is read."""
    recording = RecordingConnection(conn)
    cache = DomainInfoCache(Supervisor(recording), recording,  # type: ignore[arg-type]
                            LibvirtCaller(), MetadataLabels({}, {}), resync_interval=600)
    probe = None
    try:
        async with anyio.create_task_group() as group:
            await group.start(cache.run)  # after the first read
            probe = await asyncio.to_thread(conn.defineXML, CACHE_PROBE_XML)
            uuid = await asyncio.to_thread(probe.UUIDString)
            cache.on_event(event("lifecycle", "defined", GONE))
            for _ in range(20):
                await anyio.lowlevel.checkpoint()  # the cache's task runs: a read would start
            cache.on_event(event("lifecycle", "undefined", GONE))
            cache.on_event(event("lifecycle", "defined", uuid))
            await wait_until(lambda: uuid in cache.info, 30, 0.01)
            group.cancel_scope.cancel()
        assert recording.read == [uuid]
    finally:
        if probe is not None:
            await asyncio.to_thread(probe.undefine)
