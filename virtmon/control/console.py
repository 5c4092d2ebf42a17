"""A domain's console and channels over the control socket: a WebSocket bridged to a libvirt stream.

``GET /v1/domains/{domain}/console`` and ``GET /v1/domains/{domain}/channels/{name}`` upgrade to
a WebSocket (docs/adr/0005 says why not a bare HTTP Upgrade) whose binary messages carry the
bytes both ways. Every console has a read-write libvirt connection of its own, opened for it and
closed with it, so a stream never shares a connection with a call, and closing the connection is
the last word on the stream: nothing of it is left in libvirtd.

Blocking calls (opening the connection, ``virDomainOpenConsole``/``OpenChannel``, sending to the
guest, aborting the stream, closing) run in worker threads with a deadline. What the guest sends
is read on the loop thread, from the stream's event callback, with ``recv`` on a
``VIR_STREAM_NONBLOCK`` stream: it only takes what libvirt's client has already queued, and says
-2 when nothing is (no RPC, no wait).

Back-pressure: towards the guest, the client's next message is not read until the previous one
was sent. Towards the client, libvirt's client keeps reading its socket whatever we do (its own
queue is unbounded), so the bytes are taken off it at once into a buffer of at most
:data:`BUFFER_LIMIT`, and a client that lets that fill, or takes nothing of a write for
:data:`WRITE_TIMEOUT` seconds, is disconnected with the close code :data:`TOO_SLOW`.

Close codes (with a reason text): 1000 the client closed, 1001 the daemon stops, 4000 the domain
stopped, 4001 another client took the stream over, 4002 libvirt ended the stream, 4003 the
client was too slow, 4004 the guest did not take input in time.
"""

from __future__ import annotations

import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import libvirt
import structlog
from aiohttp import WSMsgType, web

from virtmon.control.api import PEER_KEY, role_of
from virtmon.control.executor import Executor, Failure, resolve
from virtmon.control.operations.model import ArgumentError, Operation, validate
from virtmon.control.operations.streams import CHANNEL, CHANNEL_ROUTE, CONSOLE, CONSOLE_ROUTE
from virtmon.control.problems import problem
from virtmon.control.roles import UNKNOWN, Peer, allows
from virtmon.exposition.family import FamilySpec, MetricFamily
from virtmon.virt.calls import LibvirtCaller
from virtmon.virt.handle import open_connection

log = structlog.get_logger("virtmon.control.console").bind(component="control")

# What one recv takes off libvirt's queue, and the most held for a client that is behind.
CHUNK = 64 * 1024
BUFFER_LIMIT = 1 << 20
# A message from the client is at most this long (aiohttp closes with 1009 beyond).
MAX_MESSAGE = 64 * 1024
WRITE_TIMEOUT = 30.0
# How long after the stream's end the domain may take to be shut off in libvirt's eyes.
STOP_GRACE = 5.0
# Consoles and channels open at once (each holds a libvirt connection).
MAX_BRIDGES = 64
# How long a stopping daemon waits for its streams to close.
SHUTDOWN_WAIT = 5.0
# Console calls abandoned at their deadline and still blocked, before no new one starts.
MAX_ABANDONED = 4

CONSOLE_FAMILIES = (
    FamilySpec("virtmon_console_streams_open", "gauge",
               "Consoles and channels bridged to a client now.", unit="streams",
               source="consoles and channels open on the control socket"),
    FamilySpec("virtmon_console_calls_abandoned_total", "counter",
               "Console and channel libvirt calls abandoned after overrunning their deadline.",
               unit="calls",
               source="console calls (open, send, abort, close) abandoned past "
                      "`control.request_timeout`"),
    FamilySpec("virtmon_console_calls_abandoned_outstanding", "gauge",
               "Abandoned console and channel libvirt calls still blocked in libvirt.",
               unit="calls", source="abandoned console calls still blocked in libvirt"),
)

CLIENT_CLOSED = 1000
DAEMON_STOPPING = 1001
DOMAIN_STOPPED = 4000
TAKEN_OVER = 4001
STREAM_ENDED = 4002
TOO_SLOW = 4003
GUEST_STALLED = 4004


@dataclass(slots=True)
class Ending:
    """Why a bridge ended: a WebSocket close code and a reason (at most 123 bytes)."""

    code: int
    reason: str


@dataclass(slots=True)
class Opened:
    """A stream libvirt opened for us, on its own connection."""

    conn: Any
    stream: Any
    uuid: str
    name: str


@dataclass(slots=True)
class Bridge:
    """One client's stream: libvirt's side, the bytes waiting for the client, how it ended."""

    opened: Opened
    device: str
    peer: Peer
    pending: bytearray = field(default_factory=bytearray)
    readable: anyio.Event = field(default_factory=anyio.Event)
    ending: Ending | None = None
    libvirt_ended: str | None = None  # libvirt's EOF or error, before we know why
    takeover_by: int | None = None  # the uid of a client asking to take over (force)
    callback_on: bool = True
    stop: Callable[[], None] | None = None  # cancels the bridge's tasks
    to_guest: int = 0
    from_guest: int = 0
    started: float = field(default_factory=time.monotonic)

    def end(self, ending: Ending) -> None:
        """The first reason wins; whatever the bridge still waits for is cancelled (a write to a
        client that reads nothing, a read of one that sends nothing)."""
        if self.ending is None:
            self.ending = ending
        self.readable.set()
        if self.stop is not None:
            self.stop()

    def on_event(self, _stream: Any, _events: int, _opaque: Any) -> None:
        """libvirt's stream callback, on the loop thread: take what libvirt's client queued."""
        stream = self.opened.stream
        if self.ending is not None or self.libvirt_ended is not None:
            self._quiet(stream)
            return
        while len(self.pending) < BUFFER_LIMIT:
            try:
                got = stream.recv(CHUNK)
            except libvirt.libvirtError as exc:
                self.libvirt_ended = exc.get_error_message() or str(exc)
                break
            if got == -2:
                break
            if not got:
                self.libvirt_ended = "end of stream"
                break
            self.pending += got
            self.from_guest += len(got)
        else:
            self.end(Ending(TOO_SLOW, f"client too slow: {BUFFER_LIMIT} bytes of the guest's "
                                      "output waiting for it"))
        if self.ending is not None or self.libvirt_ended is not None:
            self._quiet(stream)
        self.readable.set()

    def _quiet(self, stream: Any) -> None:
        """No more callbacks: libvirt's stream timer fires on every loop turn while its queue
        holds data or its end, and nothing more will be taken off it."""
        if self.callback_on:
            self.callback_on = False
            with contextlib.suppress(libvirt.libvirtError):
                stream.eventUpdateCallback(0)


def _device_exists(dom: Any, channel: str | None) -> bool:
    """Whether the domain has the console, or a channel with that target name."""
    devices = ET.fromstring(dom.XMLDesc(0)).find("devices")
    if devices is None:
        return False
    if channel is None:
        return devices.find("console") is not None or devices.find("serial") is not None
    return any(target.get("name") == channel for target in devices.iterfind("channel/target"))


class Consoles:
    """The console and channel routes and the bridges open now."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.bridges: dict[tuple[str, str], Bridge] = {}
        self.serving = 0  # handlers with a stream, until their libvirt side is closed
        self._idle: anyio.Event | None = None  # set when serving drops to 0 (at shutdown)
        # Calls of their own: every console's connection is its own too, so calls stuck on the
        # collection's or the operations' connections (which the shared caller counts against
        # its limit) say nothing about whether a console can be opened or closed.
        self.caller = LibvirtCaller(capacity=4, default_deadline=executor.deadline,
                                    max_abandoned=MAX_ABANDONED)

    @property
    def open(self) -> int:
        """Bridges open now."""
        return len(self.bridges)

    def families(self) -> list[MetricFamily]:
        """Streams open, and the console calls abandoned (a metric source of the scheduler's:
        these calls have a caller of their own, which the collection's series do not count)."""
        values = (self.open, self.caller.abandoned_total, self.caller.abandoned_outstanding)
        families = []
        for spec, value in zip(CONSOLE_FAMILIES, values, strict=True):
            family = spec.new()
            family.add((), value)
            families.append(family)
        return families

    def add_routes(self, app: web.Application) -> None:
        """The two GET routes, and their end when the server shuts down."""
        app.router.add_get(CONSOLE_ROUTE, self.console)
        app.router.add_get(CHANNEL_ROUTE, self.channel)
        app.on_shutdown.append(self._shutdown)

    async def _shutdown(self, _app: web.Application) -> None:
        """Before aiohttp closes the connections: every stream ends with 1001 and its reason,
        and its libvirt connection is closed (bounded: a client that never answers the close
        is cut off after 2 s)."""
        for bridge in list(self.bridges.values()):
            bridge.end(Ending(DAEMON_STOPPING, "the daemon is stopping"))
        if self.serving:
            self._idle = anyio.Event()
            with anyio.move_on_after(SHUTDOWN_WAIT):
                await self._idle.wait()

    async def console(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/domains/{domain}/console``."""
        return await self._serve(request, CONSOLE, None)

    async def channel(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/domains/{domain}/channels/{name}``."""
        return await self._serve(request, CHANNEL, request.match_info["name"])

    # -- opening ---------------------------------------------------------------------------

    async def _serve(self, request: web.Request, op: Operation,
                     channel: str | None) -> web.StreamResponse:
        peer = request.get(PEER_KEY, UNKNOWN)
        raw: dict[str, Any] = dict(request.query)
        raw["domain"] = request.match_info["domain"]
        if channel is not None:
            raw["name"] = channel
        try:
            args = validate(op, raw)
        except ArgumentError as exc:
            return problem(400, "Bad Request", str(exc), key=exc.key)
        role = role_of(request)
        who = {"caller_role": role, "needs": op.role, "privileged": True}
        if not allows(role, op.role):
            self.executor.audit(op, args, peer, {**who, "ok": False, "status": 403,
                                                 "title": "Forbidden"})
            return problem(403, "Forbidden", f"{op.name} needs the {op.role} role; "
                           f"uid {peer.uid} has {role}", role=role, needs=op.role)
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, autoping=True)
        if not ws.can_prepare(request).ok:
            return problem(426, "Upgrade Required", f"{op.name} is a WebSocket: send "
                           "'Connection: Upgrade' and 'Upgrade: websocket' (RFC 6455)",
                           headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        try:
            bridge = await self._open(op, args, peer, channel)
        except Failure as exc:
            self.executor.audit(op, args, peer, {**who, "ok": False, **exc.as_dict()})
            return problem(exc.status, exc.title, exc.detail, **exc.extra)
        self.executor.audit(op, args, peer, {**who, "ok": True, "result": {
            "uuid": bridge.opened.uuid, "device": bridge.device, "event": "open"}})
        self.serving += 1
        try:
            await self._bridge(request, ws, bridge)
        finally:
            with anyio.CancelScope(shield=True):
                # libvirt's side first: nothing that waits on the client comes before it.
                await self._close(op, args, bridge, who)
                await self._say_goodbye(request, ws, bridge)
            self.serving -= 1
            if not self.serving and self._idle is not None:
                self._idle.set()
        return ws

    async def _open(self, op: Operation, args: dict[str, Any], peer: Peer,
                    channel: str | None) -> Bridge:
        executor = self.executor
        if not executor.allow_write:
            raise Failure(403, "Forbidden", f"{op.name} needs the read-write connection, and "
                          "control.allow_write is off")
        if not executor.supervisor.connected:
            raise Failure(503, "Service Unavailable", "libvirt is not connected; try again "
                          "shortly")
        if len(self.bridges) >= MAX_BRIDGES:
            raise Failure(503, "Service Unavailable", f"{MAX_BRIDGES} consoles and channels "
                          "are open, the most the daemon serves; retry when one closes")
        device = "console" if channel is None else f"channel {channel}"
        settings = executor.writes.settings
        conn, uuid, name = await self._blocking(self._lookup, settings, op, args, channel)
        key = (uuid, device)
        holder = self.bridges.get(key)
        if holder is not None and not args["force"]:
            await self._blocking(_close_quietly, conn, None)
            raise Failure(409, "Conflict", f"the {device} of {name} is open by another client "
                          f"(uid {holder.peer.uid}); force=true takes it over", uuid=uuid)
        if holder is not None:
            holder.takeover_by = peer.uid
        # Made here, on the loop (its Event belongs to it); the worker fills in the stream.
        bridge = Bridge(Opened(conn, None, uuid, name), device, peer)
        try:
            await self._blocking(self._open_stream, bridge, channel, args["force"])
        except Failure:
            if holder is not None:
                holder.takeover_by = None
            await self._blocking(_close_quietly, conn, bridge.opened.stream)
            raise
        if holder is not None:
            holder.end(Ending(TAKEN_OVER, f"taken over by another client (uid {peer.uid})"))
        self.bridges[key] = bridge
        return bridge

    def _lookup(self, settings: Any, op: Operation, args: dict[str, Any],
                channel: str | None) -> tuple[Any, str, str]:
        """Worker thread: a connection of its own, the domain, and whether it can be opened."""
        conn = open_connection(settings)
        try:
            dom = resolve(op, conn, args)
            uuid, name = dom.UUIDString(), dom.name()
            if not dom.isActive():
                raise Failure(409, "Conflict", f"domain {name} is not running: a console or "
                              "channel exists only while it runs",
                              libvirt_error="VIR_ERR_OPERATION_INVALID")
            if not _device_exists(dom, channel):
                what = "a console" if channel is None else f"a channel named {channel!r}"
                raise Failure(404, "Not Found", f"domain {name} has no {what}")
        except BaseException:
            _close_quietly(conn, None)
            raise
        return conn, uuid, name

    @staticmethod
    def _open_stream(bridge: Bridge, channel: str | None, force: bool) -> None:
        """Worker thread: open the stream and register its callback (which runs on the loop)."""
        conn = bridge.opened.conn
        dom = conn.lookupByUUIDString(bridge.opened.uuid)
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            if channel is None:
                flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
                dom.openConsole(None, stream, flags | libvirt.VIR_DOMAIN_CONSOLE_SAFE)
            else:
                flags = libvirt.VIR_DOMAIN_CHANNEL_FORCE if force else 0
                dom.openChannel(channel, stream, flags)
            bridge.opened.stream = stream
            stream.eventAddCallback(
                libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                | libvirt.VIR_STREAM_EVENT_HANGUP, bridge.on_event, None)
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn`` in a worker thread within the control deadline; libvirt errors as Failures."""
        executor = self.executor
        try:
            return await self.caller.call_with_deadline(executor.deadline, fn, *args)
        except libvirt.libvirtError as exc:
            failure = Failure.from_libvirt(exc)
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED:
                # "Active console session exists for this domain": held by another client.
                failure = Failure(409, "Conflict", f"{failure.detail}; force=true takes it "
                                  "over", **failure.extra)
            raise failure from None
        except TimeoutError as exc:
            raise Failure(504, "Gateway Timeout", f"{exc}; the call was abandoned") from None
        except RuntimeError as exc:
            raise Failure(503, "Service Unavailable", str(exc)) from None

    # -- bridging --------------------------------------------------------------------------

    async def _bridge(self, request: web.Request, ws: web.WebSocketResponse,
                      bridge: Bridge) -> None:
        try:
            await ws.prepare(request)
        except OSError:  # ConnectionError included
            bridge.end(Ending(CLIENT_CLOSED, "the client went away before the upgrade"))
            return
        try:
            async with anyio.create_task_group() as group:
                bridge.stop = group.cancel_scope.cancel
                group.start_soon(self._to_client, ws, bridge)
                group.start_soon(self._to_guest, ws, bridge)
        except BaseException:
            # aiohttp cancels the handler of a client that went away, and the daemon's stop
            # cancels every handler: the transport tells which.
            transport = request.transport
            if transport is None or transport.is_closing():
                bridge.end(Ending(CLIENT_CLOSED, "the client went away"))
            else:
                bridge.end(Ending(DAEMON_STOPPING, "the daemon is stopping"))
            raise
        finally:
            bridge.stop = None

    async def _to_client(self, ws: web.WebSocketResponse, bridge: Bridge) -> None:
        while True:
            await bridge.readable.wait()
            bridge.readable = anyio.Event()
            if bridge.pending and bridge.ending is None:
                data = bytes(bridge.pending)
                bridge.pending.clear()
                with anyio.move_on_after(WRITE_TIMEOUT) as scope:
                    try:
                        await ws.send_bytes(data)
                    except ConnectionError:
                        bridge.end(Ending(CLIENT_CLOSED, "the client went away"))
                if scope.cancelled_caught:
                    bridge.end(Ending(TOO_SLOW, f"client too slow: took nothing of a write "
                                                f"for {WRITE_TIMEOUT:g} s"))
                # What arrived meanwhile waits in libvirt's queue; take it now.
                bridge.on_event(None, 0, None)
            if bridge.ending is not None:
                return
            if bridge.libvirt_ended is not None and not bridge.pending:
                bridge.end(await self._why_ended(bridge))
                return

    async def _to_guest(self, ws: web.WebSocketResponse, bridge: Bridge) -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                data = message.data
            elif message.type == WSMsgType.TEXT:
                data = message.data.encode()
            else:
                break
            if not data:
                continue
            with anyio.move_on_after(WRITE_TIMEOUT) as scope:
                try:
                    await anyio.to_thread.run_sync(_send_all, bridge.opened.stream, data,
                                                   abandon_on_cancel=True)
                except libvirt.libvirtError as exc:
                    bridge.libvirt_ended = exc.get_error_message() or str(exc)
                    bridge.readable.set()
                    return
            if scope.cancelled_caught:
                bridge.end(Ending(GUEST_STALLED, f"the guest took no input for "
                                                 f"{WRITE_TIMEOUT:g} s"))
                return
            bridge.to_guest += len(data)
        bridge.end(Ending(CLIENT_CLOSED, "the client closed the stream"))

    async def _why_ended(self, bridge: Bridge) -> Ending:
        """libvirt ended the stream: the domain stopped, another client took it, or else."""
        if bridge.takeover_by is not None:
            return Ending(TAKEN_OVER, f"taken over by another client (uid {bridge.takeover_by})")
        try:
            stopped = await self._blocking(_stops_within, bridge.opened.conn,
                                           bridge.opened.uuid, STOP_GRACE)
        except Failure:
            stopped = True
        if stopped:
            return Ending(DOMAIN_STOPPED, f"domain {bridge.opened.name} stopped")
        return Ending(STREAM_ENDED, _short(f"libvirt ended the {bridge.device} "
                                           f"({bridge.libvirt_ended}); another client may "
                                           "have taken it over"))

    async def _say_goodbye(self, request: web.Request, ws: web.WebSocketResponse,
                           bridge: Bridge) -> None:
        ending = bridge.ending or Ending(CLIENT_CLOSED, "closed")
        if not ws.prepared or ws.closed:
            return
        with anyio.move_on_after(2.0) as scope:
            with contextlib.suppress(ConnectionError, OSError):
                await ws.close(code=ending.code, message=_short(ending.reason).encode())
        if scope.cancelled_caught and request.transport is not None:
            request.transport.abort()  # a client that reads nothing cannot take the close

    # -- closing ---------------------------------------------------------------------------

    async def _close(self, op: Operation, args: dict[str, Any], bridge: Bridge,
                     who: dict[str, Any]) -> None:
        key = (bridge.opened.uuid, bridge.device)
        if self.bridges.get(key) is bridge:
            del self.bridges[key]
        ending = bridge.ending or Ending(CLIENT_CLOSED, "closed")
        with contextlib.suppress(Failure):
            await self._blocking(_close_quietly, bridge.opened.conn, bridge.opened.stream)
        record = {**who, "ok": True,
                  "result": {"uuid": bridge.opened.uuid, "device": bridge.device,
                             "event": "close", "code": ending.code, "reason": ending.reason,
                             "bytes_to_guest": bridge.to_guest,
                             "bytes_from_guest": bridge.from_guest,
                             "seconds": round(time.monotonic() - bridge.started, 3)}}
        self.executor.audit(op, args, bridge.peer, record)


def _send_all(stream: Any, data: bytes) -> None:
    """Worker thread: all of ``data`` into the stream (a NONBLOCK stream may take a part)."""
    view = memoryview(data)
    while view:
        sent = stream.send(bytes(view))
        if sent == -2:
            time.sleep(0.01)
            continue
        view = view[sent:]


def _stops_within(conn: Any, uuid: str, seconds: float) -> bool:
    """Worker thread: whether the domain is, or within ``seconds`` becomes, inactive. The
    console's end comes as QEMU goes, a moment before libvirt marks the domain shut off."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if not conn.lookupByUUIDString(uuid).isActive():
                return True
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return True  # a transient domain is gone once it stops
            raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _close_quietly(conn: Any, stream: Any | None) -> None:
    """Worker thread: the stream's callback removed, the stream aborted, the connection closed:
    closing it drops whatever libvirtd still holds for it."""
    if stream is not None:
        with contextlib.suppress(libvirt.libvirtError):
            stream.eventRemoveCallback()
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def _short(text: str) -> str:
    """A close reason fits in 123 bytes (RFC 6455)."""
    raw = text.encode()
    return text if len(raw) <= 123 else raw[:120].decode(errors="ignore") + "..."

