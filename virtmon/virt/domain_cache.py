"""Cached facts from each domain's XML: OS type, persistence, autostart, metadata labels.

They change only on events, so they are never fetched per cycle (rule 4): a domain is re-read when
an event says it changed (defined, undefined, metadata change, device added or removed, tunable)
and every domain once per ``resync_interval`` (which also catches what no event reports). Reads run
in worker threads on a connection of the cache's own; the cycle only copies the cached mapping.

Not on the events connection: a call in flight there when libvirtd stalls is still queued when
keepalive closes the connection, and libvirt 9.0's libvirtd, resuming, then closes that client
twice at once (from the worker answering the call and from its event loop seeing the EOF). Both
walk the client's event callbacks ("unexpected incomplete domain callback", "could not find
event callback N for deletion" in its log), and libvirtd later dies of it (SIGSEGV in
virNetServerClientCloseLocked). The events connection carries no call after its subscription
and listing, so a stall finds nothing queued on it.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import libvirt
import structlog
from anyio.abc import TaskStatus

from virtmon.collectors.snapshot import DomainInfo
from virtmon.component import Restart
from virtmon.events.model import Event
from virtmon.virt.calls import LibvirtCaller
from virtmon.virt.connection import ConnectionSupervisor
from virtmon.virt.pool import ConnectionPool

if TYPE_CHECKING:
    from virtmon.config import CollectConfig

# Not .bind(): that makes a logger when the module is imported, which the configuration's check
# does before logging is configured (its records would ignore log.level and log.format).
log = structlog.get_logger("virtmon.virt.domain_cache", component="domain_cache")

# Domains read per call in a full resync (three calls each: XML, autostart, persistence); what
# events marked is refreshed between two chunks, so an event waits for one chunk at most.
RESYNC_CHUNK = 25

# Seconds between a domain's first mark and its read, while no resync runs: a burst of events
# (a storm of defines and undefines) is read once, and a domain undefined meanwhile not at all.
MARKED_SETTLE = 0.5

# Event kinds after which a domain's XML may differ.
REFRESH_KINDS = frozenset({"metadata_change", "device_added", "device_removed", "tunable"})


class MetadataLabels:
    """Extra info-metric labels read from domain XML with namespaced paths.

    Each path is ElementTree's XPath subset relative to ``<domain>`` (a leading ``/domain/`` is
    accepted), optionally ending in ``/@attribute``, e.g.
    ``metadata/nova:instance/nova:owner/nova:project/@uuid`` with ``nova`` in ``namespaces``.
    """

    def __init__(self, paths: Mapping[str, str], namespaces: Mapping[str, str]) -> None:
        self.namespaces = dict(namespaces)
        self.paths: dict[str, tuple[str, str | None]] = {}
        for label, path in paths.items():
            path = path.removeprefix("/domain/").removeprefix("./")
            element, found, attribute = path.rpartition("/@")
            self.paths[label] = (element, attribute) if found else (path, None)

    def read(self, root: ET.Element) -> dict[str, str]:
        """Label → value for the paths found in this document."""
        labels = {}
        for label, (path, attribute) in self.paths.items():
            found = root.find(path, self.namespaces)
            if found is None:
                continue
            text = found.get(attribute) if attribute else found.text
            if text is not None:
                labels[label] = text.strip()
        return labels


def read_domain(dom: Any, labels: MetadataLabels) -> DomainInfo:
    """One domain's cached facts (blocking: three calls)."""
    root = ET.fromstring(dom.XMLDesc(0))
    os_type = root.findtext("os/type", default="").strip()
    autostart = False
    with contextlib.suppress(libvirt.libvirtError):  # transient domains have no autostart
        autostart = bool(dom.autostart())
    return DomainInfo(
        name=dom.name(), uuid=dom.UUIDString(), os_type=os_type,
        persistent=bool(dom.isPersistent()), autostart=autostart,
        metadata_labels=labels.read(root),
    )


def list_all(conn: Any) -> list[Any]:
    """Every domain object (blocking: one call)."""
    return list(conn.listAllDomains(0))


def read_many(_conn: Any, domains: list[Any], labels: MetadataLabels) -> dict[str, DomainInfo]:
    """These domains' facts; one that vanished meanwhile is left out (blocking)."""
    found = {}
    for dom in domains:
        with contextlib.suppress(libvirt.libvirtError):
            info = read_domain(dom, labels)
            found[info.uuid] = info
    return found


def read_one(conn: Any, uuid: str, labels: MetadataLabels) -> DomainInfo | None:
    """One domain's facts, or None if it no longer exists (blocking)."""
    try:
        return read_domain(conn.lookupByUUIDString(uuid), labels)
    except libvirt.libvirtError:
        return None


class DomainInfoCache:
    """Domain facts by UUID, refreshed by events and by a slow full resync."""

    def __init__(
        self,
        supervisor: ConnectionSupervisor,
        connection: ConnectionPool,
        caller: LibvirtCaller,
        labels: MetadataLabels,
        resync_interval: float,
        resync_chunk: int = RESYNC_CHUNK,
    ) -> None:
        self.supervisor = supervisor  # says whether libvirt is reachable
        self.connection = connection  # where the reads run: one connection, the cache's own
        self.caller = caller
        self.labels = labels
        self.resync_interval = resync_interval
        self.resync_chunk = resync_chunk
        self.info: dict[str, DomainInfo] = {}
        self._dirty: set[str] = set()
        self._undefined: set[str] = set()
        # While a resync runs: the domains events marked since its listing (see _resync).
        self._marked_since_listing: set[str] | None = None
        self._wake = anyio.Event()
        self._resync_due = True
        self.resyncs = 0  # completed ones

    async def reconfigure(self, collect: CollectConfig) -> Restart:
        """Take a reloaded ``collect.resync_interval`` (from the next wait on); the metadata
        labels are read at start."""
        self.resync_interval = collect.resync_interval
        return ()

    def snapshot(self) -> Mapping[str, DomainInfo]:
        """The cached facts (the cycle copies this; no libvirt call)."""
        return self.info

    def on_event(self, event: Event) -> None:
        """Bus listener: mark what an event may have changed (loop thread, never blocks).

        Starting and stopping change none of the cached facts, except that a transient domain
        (created, never defined) is first seen starting; an undefined domain is dropped without
        asking libvirt (a transient one that still runs is re-read at the next resync).
        """
        if event.kind == "connection" and event.name == "restored":
            self._resync_due = True  # events were missed while disconnected
        elif event.uuid is None:
            return
        elif event.kind == "lifecycle" and event.name == "undefined":
            self.info = {k: v for k, v in self.info.items() if k != event.uuid}
            self._dirty.discard(event.uuid)
            self._undefined.add(event.uuid)  # a refresh under way must not bring it back
            self._note_marked(event.uuid)
            return
        elif event.kind in REFRESH_KINDS or (
            event.kind == "lifecycle"
            and (event.name == "defined"
                 or (event.name == "started" and event.uuid not in self.info))
        ):
            self._dirty.add(event.uuid)
            self._undefined.discard(event.uuid)
            self._note_marked(event.uuid)
        else:
            return
        self._wake.set()

    def _note_marked(self, uuid: str) -> None:
        if self._marked_since_listing is not None:
            self._marked_since_listing.add(uuid)

    async def run(self, first_read_within: float | None = None, *,
                  task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Refresh what events marked, and resync everything every ``resync_interval``.

        ``started`` after the first read of every domain (tried only if connected), so that the
        first collection cycle has the facts instead of empty labels until the next one; or
        after ``first_read_within`` seconds, if given: a long first read (thousands of domains)
        or a hung libvirtd does not hold start-up. The read goes on meanwhile, not abandoned:
        an abandoned call would hold a thread, and the next cycle's calls might be refused.
        """
        first_read = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(self._keep_fresh, first_read)
            with anyio.move_on_after(first_read_within):
                await first_read.wait()
            task_status.started()

    async def _keep_fresh(self, first_read: anyio.Event) -> None:
        """The refresh loop; ``first_read`` is set once the first read was tried (or not, when
        libvirt is unreachable at start)."""
        if self.supervisor.connected:
            await self._try_refresh()
        first_read.set()
        while True:
            if not self.supervisor.connected:
                self._resync_due = True
                await self.supervisor.wait_connected()
                continue
            if self._dirty and not self._resync_due:
                await anyio.sleep(MARKED_SETTLE)
            if (self._resync_due or self._dirty) and not await self._try_refresh():
                await anyio.sleep(1)
                continue
            with anyio.move_on_after(self.resync_interval) as waited:
                await self._wake.wait()
            self._wake = anyio.Event()
            if waited.cancelled_caught:
                self._resync_due = True

    async def _try_refresh(self) -> bool:
        """:meth:`_refresh`; a failure is logged (what is marked stays marked)."""
        try:
            await self._refresh(self.connection)
        except Exception as exc:
            log.warning("virtmon.domain_cache.refresh_failed", error=str(exc))
            return False
        return True

    async def _refresh(self, conn: Any) -> None:
        """A resync if one is due, else a refresh of what events marked."""
        self._undefined = set()
        if self._resync_due:
            await self._resync(conn)
        else:
            await self._refresh_marked(conn)

    async def _resync(self, conn: Any) -> None:
        """Read every domain, in chunks: each chunk is one call on the cache's connection and
        goes into the cache at once, and what events marked meanwhile is refreshed between
        chunks, so an event waits for one chunk at most, not for the whole resync (seconds at
        thousands of domains). On failure the resync stays due (chunks read so far are kept)."""
        # A resync asked for from here on (a reconnect) is another one, after this one.
        self._resync_due = False
        # Marked by an event from here on: read (or dropped) on its own, newer than a chunk.
        marked = self._marked_since_listing = set()
        try:
            domains = await self.caller.call(conn.run, list_all)
            listed: set[str] = set()
            for start in range(0, len(domains), self.resync_chunk):
                chunk = domains[start:start + self.resync_chunk]
                info = await self.caller.call(conn.run, read_many, chunk, self.labels)
                listed |= info.keys()
                self._apply({k: v for k, v in info.items() if k not in marked}, ())
                if self._dirty:
                    await self._refresh_marked(conn)
        except BaseException:
            self._resync_due = True
            raise
        finally:
            self._marked_since_listing = None
        # Gone since the last resync: neither listed now nor marked by an event since.
        keep = listed | marked
        self._apply({}, [uuid for uuid in self.info if uuid not in keep])
        self.resyncs += 1
        log.debug("virtmon.domain_cache.resync", domains=len(self.info))

    async def _refresh_marked(self, conn: Any) -> None:
        """Re-read the domains events marked; on failure they stay marked for the next try."""
        dirty, self._dirty = self._dirty, set()
        fresh: dict[str, DomainInfo] = {}
        gone: list[str] = []
        try:
            for uuid in dirty:
                info = await self.caller.call(conn.run, read_one, uuid, self.labels)
                if info is None:
                    gone.append(uuid)
                else:
                    fresh[uuid] = info
        except BaseException:
            self._dirty |= dirty
            raise
        finally:
            self._apply(fresh, gone)

    def _apply(self, fresh: Mapping[str, DomainInfo], gone: Iterable[str]) -> None:
        """Put read facts into the cache and drop ``gone`` domains, as a new mapping (a cycle
        may be copying the old one in a worker thread). Domains undefined while they were being
        read stay gone."""
        dropped = set(gone)
        info = {k: v for k, v in self.info.items() if k not in dropped}
        info.update((k, v) for k, v in fresh.items() if k not in self._undefined)
        self.info = info
