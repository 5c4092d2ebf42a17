"""``GET /v1/events``: the live event stream, resumable from the journal without gap or duplicate.

Server-Sent Events with ``Accept: text/event-stream``, NDJSON otherwise; docs/control-api.md
("The event stream") is the contract. ``since=SEQ`` (or ``Last-Event-ID``, which wins) replays
the journal after SEQ and then continues live: the live subscription is taken *before* the
replay is read, and live events at or below the last sequence number sent are skipped, so
nothing falls between the two and nothing comes twice.

Whenever the client's position is not continued exactly it is told, never silently moved: a
position after the last journaled event is a 400 (nothing was ever journaled there: the state
directory was reset, or the number is made up), and events retention has removed are announced
by a ``gap`` notice naming the first one still there before the stream goes on. A subscriber
whose queue fills is cut off by the bus and gets an ``overflow`` notice with the ``since`` to
resume from; a follower still open when the daemon stops gets an ``end`` notice.

Streams are not requests: they do not count against ``control.max_requests`` (a follower is
open for hours), but against ``control.max_streams`` in total and
``control.max_streams_per_caller`` per uid, so no caller can starve the others or the API.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import structlog
from aiohttp import web

from virtmon.control.api import PEER_KEY, request_peer
from virtmon.control.operations.model import UUID_RE
from virtmon.control.problems import problem
from virtmon.events.bus import EventBus, Subscription
from virtmon.events.catalog import known_kind
from virtmon.events.journal import EventFilter, uuid_key
from virtmon.events.model import Event
from virtmon.virt.inventory import Inventory

log = structlog.get_logger("virtmon.control.events").bind(component="control")

PAGE = 1000
# Every stream subscriber counts its drops under one sink name: a label value per client would
# add a series to virtmon_events_dropped_total for every slow client, for ever.
STREAM_SINK = "stream"
PARAMETERS = ("since", "follow", "domain", "kind")
FOLLOW_VALUES = {"0": False, "false": False, "1": True, "true": True}
# A follower hears something at least this often: an event, or a heartbeat when all is quiet.
HEARTBEAT_INTERVAL = 15.0
# A write the client takes nothing of for this long ends its stream (it stopped reading).
WRITE_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The stream's settings (``control.max_streams*``, ``events.subscriber_queue_size``)."""

    queue_size: int = 1000
    max_streams: int = 256
    max_streams_per_caller: int = 32
    heartbeat: float = HEARTBEAT_INTERVAL
    write_timeout: float = WRITE_TIMEOUT


class StreamSlots:
    """Open streams, in total and per caller (uid): a stream takes a slot or is refused."""

    def __init__(self, limits: StreamLimits) -> None:
        self.limits = limits
        self.by_caller: Counter[int] = Counter()

    @property
    def open(self) -> int:
        """Streams open now."""
        return sum(self.by_caller.values())

    def take(self, uid: int) -> web.Response | None:
        """Take a slot for ``uid``; the refusal (429 or 503, with Retry-After) if none is free."""
        limits = self.limits
        if self.by_caller[uid] >= limits.max_streams_per_caller:
            return problem(429, "Too Many Requests",
                           f"uid {uid} has {self.by_caller[uid]} event streams open, the most "
                           "one caller may (control.max_streams_per_caller); close one",
                           headers={"Retry-After": "5"})
        if self.open >= limits.max_streams:
            return problem(503, "Service Unavailable",
                           f"{self.open} event streams are open, the most the daemon serves "
                           "(control.max_streams); retry shortly", headers={"Retry-After": "5"})
        self.by_caller[uid] += 1
        return None

    def give_back(self, uid: int) -> None:
        """Release ``uid``'s slot."""
        self.by_caller[uid] -= 1
        if self.by_caller[uid] <= 0:
            del self.by_caller[uid]


class Stalled(Exception):
    """The client took nothing of a write for ``write_timeout`` seconds."""


class StreamWriter:
    """Writes events and notices in the format the client asked for."""

    def __init__(self, response: web.StreamResponse, sse: bool, write_timeout: float,
                 line: Callable[[Event], str] = Event.to_json) -> None:
        self.response = response
        self.sse = sse
        self.write_timeout = write_timeout
        self.line = line  # an event's JSON (the journal keeps the last ones it wrote)

    def format(self, event: Event) -> str:
        """One event as the client's format has it."""
        if self.sse:
            return f"id: {event.seq}\nevent: {event.kind}\ndata: {self.line(event)}\n\n"
        return self.line(event) + "\n"

    async def _write(self, text: str) -> None:
        with anyio.move_on_after(self.write_timeout) as scope:
            await self.response.write(text.encode())
        if scope.cancelled_caught:
            raise Stalled

    async def events(self, events: list[Event]) -> None:
        """Several events in one write (one syscall for a burst)."""
        await self._write("".join(self.format(e) for e in events))

    async def notice(self, kind: str, body: dict[str, Any], seq: int | None = None) -> None:
        """A control message, not an event: in SSE an ``event: KIND`` frame (with ``id: seq``
        when the notice moves the client's position), in NDJSON ``{"KIND": body}``."""
        if self.sse:
            frame = f"id: {seq}\n" if seq is not None else ""
            await self._write(f"{frame}event: {kind}\ndata: {json.dumps(body)}\n\n")
        else:
            await self._write(json.dumps({kind: body}) + "\n")

    async def position(self, seq: int) -> None:
        """SSE: set the client's last event id to ``seq`` without an event."""
        await self._write(f"id: {seq}\n\n")

    async def heartbeat(self, last_seq: int) -> None:
        """Proof of life on a quiet stream: an SSE comment (which EventSource ignores), or an
        NDJSON ``heartbeat`` notice."""
        if self.sse:
            await self._write(": heartbeat\n\n")
        else:
            await self.notice("heartbeat", {"time": round(time.time(), 3),
                                            "last_seq": last_seq})


@dataclass(frozen=True, slots=True)
class StreamQuery:
    """A validated request: where to start, what to send, how."""

    since: int | None
    event_filter: EventFilter
    follow: bool
    sse: bool


def _bad(detail: str, key: str, **extra: Any) -> web.Response:
    return problem(400, "Bad Request", detail, key=key, **extra)


def _position(request: web.Request, last_seq: int) -> int | web.Response | None:
    """The client's position: ``Last-Event-ID`` (an EventSource reconnecting) over ``since``."""
    header = request.headers.get("Last-Event-ID", "").strip()
    key, given = ("Last-Event-ID", header) if header else ("since", request.query.get("since"))
    if given is None:
        return None
    try:
        since = int(given) if given.isascii() and given.isdigit() else -1
    except ValueError:  # more digits than int() takes: no sequence number is that long
        since = last_seq + 1
    if since < 0:
        return _bad(f"{key} must be a sequence number (an integer, 0 or more), not {given!r}",
                    key)
    if since > last_seq:
        shown = given if len(given) <= 24 else given[:20] + "..."
        return _bad(f"{key}={shown} is after the last journaled event ({last_seq}): no event "
                    "was ever journaled there (was the state directory reset?); resume with "
                    f"since={last_seq} or less, or follow without since", key, last_seq=last_seq)
    return since


def _domain_filter(values: list[str], inventory: Inventory
                   ) -> tuple[frozenset[str] | None, frozenset[str] | None] | web.Response:
    """``domain=`` values as (names, UUIDs): a name, a UUID, or the id of a running domain."""
    if not values:
        return None, None
    names: set[str] = set()
    uuids: set[str] = set()
    for value in values:
        if not value:
            return _bad("domain must not be empty (a name, UUID or id)", "domain")
        if UUID_RE.match(value):
            uuids.add(uuid_key(value))
        elif value.isascii() and value.isdigit():
            found = inventory.find(value)
            if found is None or not found.active:
                return _bad(f"no running domain has id {value} (an id names a domain only "
                            "while it runs; use its name or UUID)", "domain")
            uuids.add(uuid_key(found.uuid))
        else:
            names.add(value)
    return (frozenset(names) or None), (frozenset(uuids) or None)


def parse(request: web.Request, inventory: Inventory, last_seq: int
          ) -> StreamQuery | web.Response:
    """The request's parameters, each checked (400 naming the parameter at fault)."""
    query = request.query
    for key in query:
        if key not in PARAMETERS:
            return _bad(f"unknown parameter {key!r} (the stream takes since, follow, domain "
                        "and kind)", key)
    for key in ("since", "follow"):
        if len(query.getall(key, [])) > 1:
            return _bad(f"{key} given more than once", key)
    since = _position(request, last_seq)
    if isinstance(since, web.Response):
        return since
    domains = _domain_filter(query.getall("domain", []), inventory)
    if isinstance(domains, web.Response):
        return domains
    kinds = query.getall("kind", [])
    for kind in kinds:
        if not known_kind(kind):
            return _bad(f"unknown event kind {kind!r} (GET /v1/openapi.json lists every kind)",
                        "kind")
    follow_arg = query.get("follow")
    if follow_arg is not None and follow_arg not in FOLLOW_VALUES:
        return _bad(f"follow must be 0, 1, true or false, not {follow_arg!r}", "follow")
    sse = "text/event-stream" in request.headers.get("Accept", "")
    follow = sse if follow_arg is None else FOLLOW_VALUES[follow_arg]
    return StreamQuery(since, EventFilter(domains[0], frozenset(kinds) or None, domains[1]),
                       follow, sse)


def gap_notice(since: int, first: int) -> dict[str, Any]:
    """The ``gap`` notice's body: events ``since+1`` to ``first-1`` are gone."""
    missed = first - since - 1
    what = (f"event {since + 1} is" if missed == 1
            else f"events {since + 1} to {first - 1} are")
    return {"message": f"{what} no longer in the journal (retention removed "
                       f"{'it' if missed == 1 else 'them'}); the stream goes on",
            "since": since, "first": first, "missed": missed}


class _Stream:
    """One client's stream: the replay, then the live events, with notices as they fall due."""

    def __init__(self, bus: EventBus, limits: StreamLimits, limiter: anyio.CapacityLimiter,
                 query: StreamQuery, writer: StreamWriter) -> None:
        self.bus = bus
        self.limits = limits
        self.limiter = limiter
        self.query = query
        self.writer = writer
        # The last seq the client has (sent, or announced as gone); None: nowhere yet.
        self.last: int | None = query.since

    async def replay(self) -> None:
        """The journal after the position (everything, without one), gaps announced."""
        last = self.last or 0
        while True:
            page, last_seq = await anyio.to_thread.run_sync(
                self.bus.journal.read_page, last, PAGE, limiter=self.limiter)
            batch: list[Event] = []
            for event in page:
                if self.last is not None and event.seq > self.last + 1:
                    await self._flush(batch)
                    await self.gap(event.seq)
                if self.query.event_filter.matches(event):
                    batch.append(event)
                self.last = last = event.seq
            await self._flush(batch)
            if len(page) < PAGE:
                break
        if self.last is not None and last_seq > self.last:
            # Nothing left after the position, yet events were journaled there: all pruned.
            await self.gap(last_seq + 1)
        if self.last is None:
            self.last = last_seq  # an empty journal read from the start

    async def _flush(self, batch: list[Event]) -> None:
        if batch:
            await self.writer.events(batch)
            batch.clear()

    async def gap(self, first: int) -> None:
        """Tell the client events up to ``first - 1`` are gone; it is now at ``first - 1``."""
        assert self.last is not None
        await self.writer.notice("gap", gap_notice(self.last, first), seq=first - 1)
        self.last = first - 1

    async def live(self, sub: Subscription) -> None:
        """Live events after the replay, heartbeats while quiet, until the bus ends the sub."""
        assert self.last is not None
        while True:
            event = None
            with anyio.move_on_after(self.limits.heartbeat):
                try:
                    event = await sub.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
            if event is None:
                await self.writer.heartbeat(self.last)
                continue
            # Whatever else is already queued goes out in the same write.
            burst = [e for e in (event, *sub.drain_nowait(PAGE)) if e.seq > self.last]
            if burst:
                await self.writer.events(burst)
                self.last = burst[-1].seq


def events_handler(bus: EventBus, inventory: Inventory, limits: StreamLimits,
                   slots: StreamSlots | None = None) -> Any:
    """The aiohttp handler, bound to the bus, the inventory (for ids) and the limits."""
    slots = slots if slots is not None else StreamSlots(limits)
    # Replays read the journal under a limiter of their own, two at a time: however many streams
    # start at once, they never take the worker threads that collection cycles and operations
    # wait for (the journal's writer has its own).
    limiter = anyio.CapacityLimiter(2)

    async def handler(request: web.Request) -> web.StreamResponse:
        parsed = parse(request, inventory, bus.journal.last_seq)
        if isinstance(parsed, web.Response):
            return parsed
        uid = (request.get(PEER_KEY) or request_peer(request)).uid
        refused = slots.take(uid)
        if refused is not None:
            return refused
        try:
            return await serve(request, parsed, uid)
        finally:
            slots.give_back(uid)

    async def serve(request: web.Request, query: StreamQuery, uid: int) -> web.StreamResponse:
        sub = bus.subscribe(STREAM_SINK, limits.queue_size, query.event_filter,
                            disconnect_when_full=True) if query.follow else None
        # What the subscription has not seen (fan-out follows the number at once, no await).
        present = bus.published_seq
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream" if query.sse else "application/x-ndjson",
            "Cache-Control": "no-cache",
            # nginx and its kin would hold the stream back in their buffers.
            "X-Accel-Buffering": "no",
        })
        try:
            await response.prepare(request)
            writer = StreamWriter(response, query.sse, limits.write_timeout, bus.journal.line)
            stream = _Stream(bus, limits, limiter, query, writer)
            # Without a position, a follower starts at the present; a one-shot read at the start.
            if query.since is not None or not query.follow:
                await stream.replay()
            else:
                stream.last = present
                if query.sse:
                    # An id-only message: no event, but an EventSource that reconnects resumes
                    # from here, even if no event came before the connection broke.
                    await writer.position(present)
            if sub is not None:
                await stream.live(sub)
                since = stream.last
                if sub.overflowed:
                    await writer.notice("overflow", {
                        "message": "subscriber too slow: disconnected; resume with since",
                        "since": since,
                    })
                elif sub.ended:
                    await writer.notice("end", {
                        "message": "the daemon is stopping; resume with since",
                        "since": since,
                    })
            await response.write_eof()
            return response
        except ConnectionResetError:
            return response  # the client went away: nothing to tell it
        except Stalled:
            log.info("virtmon.control.stream_stalled", uid=uid, seconds=limits.write_timeout)
            if request.transport is not None:
                request.transport.abort()
            return response
        finally:
            if sub is not None:
                bus.unsubscribe(sub)

    return handler
