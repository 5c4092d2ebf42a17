"""The event bus: publish without blocking, journal first, then fan out to bounded sinks.

libvirt callbacks run on the loop thread and must not wait: :meth:`EventBus.publish` only appends
to a bounded ingest queue. The bus task takes what is queued in batches, writes the batch to the
journal in a worker thread (so every event is stored before anyone sees it), then offers each event
to every sink's bounded queue. A full queue never makes the bus wait: an ordinary sink loses the
event (counted per sink); a stream subscriber (``disconnect_when_full``) is cut off instead, so it
can tell its client and resume with ``since=SEQ`` without a silent gap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from virtmon.events.journal import EventFilter, Journal
from virtmon.events.model import Event

log = structlog.get_logger("virtmon.events.bus")

INGEST_SINK = "journal"
JOURNAL_ATTEMPTS = 4


@dataclass(eq=False)
class Subscription:
    """A sink's end of the bus: a bounded queue of events, read with ``async for``."""

    name: str
    event_filter: EventFilter
    disconnect_when_full: bool
    _send: MemoryObjectSendStream[Event]
    _receive: MemoryObjectReceiveStream[Event]
    overflowed: bool = field(default=False)
    ended: bool = field(default=False)  # cut off because the daemon stops

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._receive.__aiter__()

    def drain_nowait(self, limit: int) -> list[Event]:
        """Up to ``limit`` events that are already queued, without waiting."""
        events: list[Event] = []
        while len(events) < limit:
            try:
                events.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        return events

    async def receive(self) -> Event:
        """The next event (raises ``anyio.EndOfStream`` once the bus has cut the sink off)."""
        return await self._receive.receive()


class EventBus:
    """Fan-out of journaled events to per-sink bounded queues, with drops counted per sink."""

    def __init__(self, journal: Journal, ingest_size: int = 10_000, batch_size: int = 500):
        self.journal = journal
        self.batch_size = batch_size
        self._ingest_send, self._ingest_receive = anyio.create_memory_object_stream[Event](
            ingest_size
        )
        self._subscriptions: set[Subscription] = set()
        self.dropped: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.published_seq = journal.last_seq
        # The journal's own worker thread: other thread users cannot delay event journaling.
        self._journal_limiter = anyio.CapacityLimiter(1)
        self._listeners: list[Callable[[Event], None]] = []

    def status(self) -> dict[str, Any]:
        """The ``events`` part of the daemon's status: received and dropped, by kind and sink."""
        return {"received": dict(self.received), "dropped": dict(self.dropped)}

    def publish(self, event: Event) -> bool:
        """Queue an event for the journal without blocking; False (and counted) when full."""
        self.received[event.kind] += 1
        try:
            self._ingest_send.send_nowait(event)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            # Full, or closed at shutdown: a libvirt callback must never see an exception.
            self.dropped[INGEST_SINK] += 1
            return False
        return True

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` on the loop for every journaled event (it must not block or raise)."""
        self._listeners.append(listener)

    def subscribe(
        self,
        name: str,
        size: int = 1000,
        event_filter: EventFilter | None = None,
        disconnect_when_full: bool = False,
    ) -> Subscription:
        """A new bounded sink; close it with :meth:`unsubscribe`."""
        if size <= 0:
            raise ValueError("a subscription's queue must be bounded")
        send, receive = anyio.create_memory_object_stream[Event](size)
        # The sink's drop counter exists at 0 from now on: a series whose first sample is 1
        # has no increase() in PromQL, so the first loss would go unseen.
        self.dropped[name] += 0
        sub = Subscription(name, event_filter or EventFilter(), disconnect_when_full, send, receive)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to a sink and release its queue."""
        self._subscriptions.discard(sub)
        sub._send.close()
        sub._receive.close()

    async def run(self) -> None:
        """Journal and fan out until cancelled or until :meth:`close` ends the ingest queue."""
        async with self._ingest_receive:
            while True:
                try:
                    first = await self._ingest_receive.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
                batch = [first]
                while len(batch) < self.batch_size:
                    try:
                        batch.append(self._ingest_receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self._deliver(batch)

    async def _deliver(self, batch: list[Event]) -> None:
        numbered = await self._journal(batch)
        if not numbered:
            return
        self.published_seq = numbered[-1].seq
        for event in numbered:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("virtmon.events.listener_failed", kind=event.kind)
            for sub in list(self._subscriptions):
                if not sub.event_filter.matches(event):
                    continue
                try:
                    sub._send.send_nowait(event)
                except anyio.WouldBlock:
                    self.dropped[sub.name] += 1
                    if sub.disconnect_when_full:
                        sub.overflowed = True
                        self._subscriptions.discard(sub)
                        sub._send.close()
                except anyio.BrokenResourceError:
                    self._subscriptions.discard(sub)

    async def _journal(self, batch: list[Event]) -> list[Event]:
        """Write a batch, retrying a failing journal a few times; then drop it, counted.

        Shielded: an event taken from the queue is journaled even if shutdown cancels us now.
        Events are fanned out only once journaled, so a batch that cannot be written reaches
        nobody (rule 9: nothing is delivered that a reader could not replay).
        """
        with anyio.CancelScope(shield=True):
            for attempt in range(JOURNAL_ATTEMPTS):
                try:
                    return await anyio.to_thread.run_sync(
                        self.journal.append, batch, limiter=self._journal_limiter
                    )
                except Exception as exc:
                    log.error("virtmon.events.journal_failed", error=str(exc),
                              events=len(batch), attempt=attempt + 1)
                    await anyio.sleep(0.2 * 2**attempt)
        self.dropped[INGEST_SINK] += len(batch)
        return []

    def end_streams(self) -> None:
        """Cut off every stream subscriber (at shutdown, so their handlers return at once)."""
        for sub in [s for s in self._subscriptions if s.disconnect_when_full]:
            self._subscriptions.discard(sub)
            sub.ended = True
            sub._send.close()

    def close(self) -> None:
        """End the ingest queue: :meth:`run` journals what is queued, then returns."""
        self._ingest_send.close()
