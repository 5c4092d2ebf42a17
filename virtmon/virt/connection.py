"""The connection supervisor: open, subscribe, reconcile, notice loss, back off, reconnect.

One instance owns one libvirt connection (read-only unless told otherwise). Every step that talks
to libvirt runs through :class:`~virtmon.virt.calls.LibvirtCaller` (a worker thread, a deadline);
libvirt's callbacks (domain events, the close callback) run on the loop thread and only decode and
publish (rule 3 in shared/docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import libvirt
import structlog
from anyio.abc import TaskStatus

from virtmon.backoff import backoff
from virtmon.events import catalog
from virtmon.events.bus import EventBus
from virtmon.events.model import CONNECTION_KIND, Event
from virtmon.virt.calls import LibvirtCaller
from virtmon.virt.eventloop import call_on_loop
from virtmon.virt.handle import (
    ConnectionSettings,
    SharedConnection,
    keep_alive,
    open_connection,
)
from virtmon.virt.inventory import DomainState, Inventory, Transition

log = structlog.get_logger("virtmon.virt.connection")

CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "eof",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "client",
}


class State(enum.Enum):
    """Where the supervisor is; exported as a one-hot gauge."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class ConnectionSupervisor:
    """Keeps one libvirt connection alive, subscribed to every event, and the inventory true."""

    def __init__(
        self,
        settings: ConnectionSettings,
        caller: LibvirtCaller,
        bus: EventBus,
        inventory: Inventory,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.caller = caller
        self.bus = bus
        self.inventory = inventory
        self.clock = clock
        self.state = State.CONNECTING
        self.conn: SharedConnection | None = None
        self.reconnects: Counter[str] = Counter()
        self.last_error: str | None = None  # the last failed attempt to connect
        self.event_ids: tuple[int, ...] = ()
        self.connected_since: float | None = None
        self._callback_ids: list[int] = []
        self._held: list[tuple[Event, int]] | None = None
        self._lost = anyio.Event()
        self._lost_reason = "error"
        self._connected = anyio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._log = log.bind(component="connection", uri=settings.uri)

    # -- public -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection is open and not known to be lost."""
        return self.state is State.CONNECTED

    async def wait_connected(self) -> None:
        """Return once a connection is up (used by tests and readiness)."""
        await self._connected.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, and reconnect forever; ``started`` after the first attempt has finished."""
        self._loop = asyncio.get_running_loop()
        failures = 0  # in a row: each waits longer (virtmon.backoff)
        first = True
        try:
            while True:
                self._set_state(State.CONNECTING)
                try:
                    await self._connect()
                except Exception as exc:
                    self.last_error = str(exc)
                    self._log.warning("virtmon.connection.open_failed", error=self.last_error)
                else:
                    self.last_error = None
                    failures = 0
                    if first:
                        task_status.started()
                        first = False
                    await self._lost.wait()
                    await self._on_lost()
                if first:
                    task_status.started()
                    first = False
                self._set_state(State.BACKOFF)
                failures += 1
                pause = backoff(failures, self.settings.backoff_initial,
                                self.settings.backoff_max)
                self._log.info("virtmon.connection.backoff", seconds=round(pause, 3))
                await anyio.sleep(pause)
        finally:
            with anyio.CancelScope(shield=True):
                await self._teardown()
                self._set_state(State.STOPPED)

    # -- connecting ---------------------------------------------------------------------------

    async def _connect(self) -> None:
        # Whoever comes second owns closing a connection that nobody will use: the opening
        # thread if the caller already gave up, else the caller when it gives up.
        handover = threading.Lock()
        state: dict[str, Any] = {"abandoned": False, "conn": None}

        def open_or_discard() -> Any:
            conn = open_connection(self.settings)
            with handover:
                if not state["abandoned"]:
                    state["conn"] = conn
                    return conn
            conn.close()  # a hung daemon came back late: nobody owns this connection
            return None

        try:
            conn = await self.caller.call_with_deadline(
                self.settings.open_timeout, open_or_discard
            )
        except BaseException:
            with handover:
                state["abandoned"] = True
                late = state["conn"]
            if late is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    await anyio.to_thread.run_sync(late.close)
            raise
        self._lost = anyio.Event()
        self.conn = shared = SharedConnection(conn)
        # Events that arrive between subscribing and the listing are held back, so that the
        # listing cannot overwrite what they say: reconcile first, then apply them in order.
        self._held = []
        try:
            await self.caller.call(shared.run, self._subscribe)
            listing = await self.caller.call(shared.run, list_domains)
        except BaseException:
            self._release_held()
            await self._teardown()
            raise
        transitions = self.inventory.replace_all(listing)
        self.connected_since = self.clock()
        was_reconnect = self.reconnects.total() > 0
        self._set_state(State.CONNECTED)
        self._connected.set()
        self._log.info(
            "virtmon.connection.connected", event_ids=len(self.event_ids), domains=len(listing)
        )
        if was_reconnect:
            self._publish_connection("restored", None)
        for transition in not_held(transitions, [event for event, _ in self._held or ()]):
            self._publish_transition(transition)
        self._release_held()

    def status(self) -> dict[str, Any]:
        """The ``libvirt`` part of the daemon's status."""
        return {
            "uri": self.settings.uri,
            "state": self.state.value,
            "connected_since": self.connected_since,
            "event_ids": list(self.event_ids),
            "reconnects": dict(self.reconnects),
            # Why the last attempt to connect failed (wrong credentials, no socket...); None
            # once one succeeds.
            "last_error": self.last_error,
        }

    def _release_held(self) -> None:
        held, self._held = self._held, None
        for event, domain_id in held or ():
            self._accept(event, domain_id)

    def _subscribe(self, conn: Any) -> None:
        """In a worker thread: keepalive, close callback, and every event id libvirt accepts."""
        keep_alive(conn, self.settings)
        conn.registerCloseCallback(self._on_close, None)
        accepted: list[int] = []
        ids: list[int] = []
        for event_id in catalog.domain_event_ids():
            try:
                ids.append(conn.domainEventRegisterAny(None, event_id, self._on_event, event_id))
            except libvirt.libvirtError as exc:
                # The running libvirt does not know this id (older than the binding).
                self._log.debug("virtmon.connection.event_id_unsupported", id=event_id,
                                error=exc.get_error_message())
            else:
                accepted.append(event_id)
        self._callback_ids = ids
        self.event_ids = tuple(accepted)

    async def _on_lost(self) -> None:
        # Not "connected" while the dead connection is torn down (which may take a while).
        self._set_state(State.BACKOFF)
        reason = self._lost_reason
        self.reconnects[reason] += 1
        self._connected = anyio.Event()
        self._log.warning("virtmon.connection.lost", reason=reason)
        self._publish_connection("lost", reason)
        await self._teardown()

    async def _teardown(self) -> None:
        conn, self.conn = self.conn, None
        ids, self._callback_ids = self._callback_ids, []
        if conn is None:
            return
        try:
            await self.caller.call(conn.close, ids)
        except Exception as exc:
            self._log.info("virtmon.connection.close_failed", error=str(exc))

    # -- libvirt callbacks (loop thread; decode and publish only) ----------------------------

    def _on_close(self, _conn: Any, reason: int, _opaque: object) -> None:
        try:
            self._lost_reason = CLOSE_REASONS.get(reason, f"unknown_{reason}")
            self._in_loop(self._lost.set)
        except Exception:
            self._log.exception("virtmon.connection.close_callback_failed")

    def _on_event(self, _conn: Any, dom: Any, *rest: Any) -> None:
        try:
            event_id = rest[-1]
            decoded = catalog.decode(event_id, tuple(rest[:-1]))
            # name, UUID and id are held by the domain object: no call to libvirtd.
            name, uuid, domain_id = dom.name(), dom.UUIDString(), dom.ID()
            event = Event(
                time=self.clock(), uri=self.settings.uri, kind=decoded.kind, name=decoded.name,
                detail=decoded.detail, domain=name, uuid=uuid, payload=decoded.payload,
            )
            self._in_loop(self._accept, event, domain_id)
        except Exception:
            self._log.exception("virtmon.connection.event_callback_failed")

    def _accept(self, event: Event, domain_id: int = -1) -> None:
        if self._held is not None:
            self._held.append((event, domain_id))
            return
        if event.kind == "lifecycle" and event.uuid and event.domain:
            detail_code = event.payload.get("detail_code", 0)
            reason = detail_code if isinstance(detail_code, int) else 0
            self.inventory.apply_lifecycle(
                event.domain, event.uuid, event.name, reason, domain_id
            )
        self.bus.publish(event)

    def _in_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run on the loop thread, after what is queued there (dropped once the loop is gone)."""
        if self._loop is not None:
            call_on_loop(self._loop, fn, *args)

    # -- publishing ---------------------------------------------------------------------------

    def _publish_connection(self, name: str, reason: str | None) -> None:
        payload = {"reason": reason} if reason else {}
        self.bus.publish(Event(time=self.clock(), uri=self.settings.uri, kind=CONNECTION_KIND,
                               name=name, detail=reason, payload=payload))

    def _publish_transition(self, transition: Transition) -> None:
        dom = transition.domain
        after = transition.after
        payload = {"event": transition.name, "state": after.state_name if after else None}
        self.bus.publish(Event(
            time=self.clock(), uri=self.settings.uri, kind="lifecycle", name=transition.name,
            detail="reconciled", domain=dom.name, uuid=dom.uuid, payload=payload, synthetic=True,
        ))

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            self._log.info("virtmon.connection.state", state=state.value,
                           previous=self.state.value)
            self.state = state


def not_held(transitions: Iterable[Transition], held: Iterable[Event]) -> list[Transition]:
    """The transitions a listing found that no held-back event reports.

    A change made after subscribing shows in the listing and as a held event: the real event,
    released after the listing, stands for it (journaled once, with libvirt's own detail and
    time, instead of a synthetic copy first and the real one after it).
    """
    reported = {(event.uuid, event.name) for event in held if event.kind == "lifecycle"}
    return [t for t in transitions if (t.domain.uuid, t.name) not in reported]


def list_domains(conn: Any) -> list[DomainState]:
    """Every domain with its state in two calls, no per-domain RPC (bulk state + persistent)."""
    persistent = {
        dom.UUIDString()
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
    }
    records = conn.getAllDomainStats(
        libvirt.VIR_DOMAIN_STATS_STATE, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
    )
    listing = []
    for dom, stats in records:
        uuid = dom.UUIDString()
        listing.append(DomainState(
            name=dom.name(), uuid=uuid, id=dom.ID(), state=int(stats.get("state.state", 0)),
            reason=int(stats.get("state.reason", 0)), persistent=uuid in persistent,
        ))
    return listing
