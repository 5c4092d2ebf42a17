"""``GET /v1/events``: the live event stream, resumable from the journal without gap or duplicate.

Server-Sent Events with ``Accept: text/event-stream``, NDJSON otherwise. ``since=SEQ`` replays the
journal after SEQ and then continues live: the live subscription is taken *before* the replay is
read, and live events at or below the last sequence number sent are skipped, so nothing falls
between the two and nothing comes twice. A subscriber whose queue fills is cut off by the bus; it
gets a final message saying so, with the ``since`` to resume from.
"""

from __future__ import annotations

import json
from typing import Any

import anyio.to_thread
from aiohttp import web

from virtmon.control.problems import problem
from virtmon.events.bus import EventBus
from virtmon.events.journal import EventFilter
from virtmon.events.model import Event

PAGE = 1000
# Every stream subscriber counts its drops under one sink name: a label value per client would
# add a series to virtmon_events_dropped_total for every slow client, for ever.
STREAM_SINK = "stream"


class StreamWriter:
    """Writes events in the format the client asked for."""

    def __init__(self, response: web.StreamResponse, sse: bool) -> None:
        self.response = response
        self.sse = sse

    def format(self, event: Event) -> str:
        """One event as the client's format has it."""
        if self.sse:
            return f"id: {event.seq}\nevent: {event.kind}\ndata: {event.to_json()}\n\n"
        return event.to_json() + "\n"

    async def event(self, event: Event) -> None:
        """One event."""
        await self.response.write(self.format(event).encode())

    async def events(self, events: list[Event]) -> None:
        """Several events in one write (one syscall for a burst)."""
        await self.response.write("".join(self.format(e) for e in events).encode())

    async def notice(self, kind: str, body: dict[str, Any]) -> None:
        """A control message (overflow), not an event."""
        text = json.dumps(body)
        data = f"event: {kind}\ndata: {text}\n\n" if self.sse else json.dumps({kind: body}) + "\n"
        await self.response.write(data.encode())


def _parse(request: web.Request) -> tuple[int | None, EventFilter, bool] | web.Response:
    query = request.query
    since: int | None = None
    # An EventSource reconnects with Last-Event-ID: resume there unless since says otherwise.
    given = query.get("since", request.headers.get("Last-Event-ID"))
    if given is not None:
        try:
            since = int(given)
        except ValueError:
            return problem(400, "Bad Request", f"since must be an integer, not {given!r}")
        if since < 0:
            return problem(400, "Bad Request", "since must not be negative")
    domains = frozenset(query.getall("domain", [])) or None
    kinds = frozenset(query.getall("kind", [])) or None
    sse = "text/event-stream" in request.headers.get("Accept", "")
    follow_arg = query.get("follow")
    if follow_arg not in (None, "0", "1", "true", "false"):
        return problem(400, "Bad Request", "follow must be 0/1 or true/false")
    follow = sse if follow_arg is None else follow_arg in ("1", "true")
    return since, EventFilter(domains, kinds), follow


def events_handler(bus: EventBus, queue_size: int) -> Any:
    """The aiohttp handler, bound to the bus and the per-subscriber queue size."""

    async def handler(request: web.Request) -> web.StreamResponse:
        parsed = _parse(request)
        if isinstance(parsed, web.Response):
            return parsed
        since, event_filter, follow = parsed
        sse = "text/event-stream" in request.headers.get("Accept", "")
        sub = bus.subscribe(
            STREAM_SINK, queue_size, event_filter, disconnect_when_full=True
        ) if follow else None
        try:
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
                "Cache-Control": "no-cache",
            })
            await response.prepare(request)
            writer = StreamWriter(response, sse)
            # Without since, a follower starts at the present; a one-shot read at the start.
            last = bus.published_seq if since is None and follow else (since or 0)
            if since is not None or not follow:
                first_page = True
                while True:
                    page = await anyio.to_thread.run_sync(bus.journal.read_since, last, PAGE)
                    if first_page and page and page[0].seq > last + 1:
                        # Retention removed what the reader asked for: say so, never skip it
                        # silently.
                        await writer.notice("gap", {"since": last, "first": page[0].seq})
                    first_page = False
                    matching = [event for event in page if event_filter.matches(event)]
                    if matching:
                        await writer.events(matching)
                    if page:
                        last = page[-1].seq
                    if len(page) < PAGE:
                        break
            if sub is not None:
                async for event in sub:
                    # Whatever else is already queued goes out in the same write.
                    burst = [event, *sub.drain_nowait(PAGE)]
                    burst = [e for e in burst if e.seq > last]
                    if burst:
                        await writer.events(burst)
                        last = burst[-1].seq
                if sub.overflowed:
                    await writer.notice("overflow", {
                        "message": "subscriber too slow: disconnected; resume with since",
                        "since": last,
                    })
            await response.write_eof()
            return response
        except ConnectionResetError:
            return response  # the client went away: nothing to tell it
        finally:
            if sub is not None:
                bus.unsubscribe(sub)

    return handler
