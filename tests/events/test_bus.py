"""Tests of the event bus: journal before fan-out, bounded queues that drop and count or cut off
a slow subscriber, filters, and a close that journals what was queued."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import structlog

from tests.events.samples import ev
from tests.waiting import wait_until
from virtmon.events.bus import INGEST_SINK, EventBus, Subscription
from virtmon.events.journal import EventFilter, Journal
from virtmon.events.model import Event


@contextlib.asynccontextmanager
async def running_bus(tmp_path: Path, **kwargs: int) -> AsyncIterator[EventBus]:
    """A bus on a fresh journal with run() going; closed, awaited and the journal closed after."""
    journal = Journal(tmp_path / "journal.db")
    bus = EventBus(journal, **kwargs)
    task = asyncio.ensure_future(bus.run())
    try:
        yield bus
    finally:
        bus.close()
        await asyncio.wait_for(task, 5)
        journal.close()


async def test_event_is_journaled_before_a_subscriber_sees_it(tmp_path: Path) -> None:
    """When a subscriber (or listener) receives an event it is already in the journal."""
    async with running_bus(tmp_path) as bus:
        sub = bus.subscribe("sink")
        in_journal_for_listener: list[bool] = []
        bus.add_listener(lambda e: in_journal_for_listener.append(
            bus.journal.read_since(e.seq - 1, 1) == [e]))
        assert bus.publish(ev(1)) is True
        received = await asyncio.wait_for(sub.receive(), 5)
        assert received.seq == 1
        assert bus.journal.read_since(0) == [received]
        assert in_journal_for_listener == [True]
        assert bus.published_seq == 1
        assert bus.received == {"lifecycle": 1}
        bus.unsubscribe(sub)


async def test_every_subscriber_gets_every_event_in_order(tmp_path: Path) -> None:
    """Two sinks each get all events, numbered in publish order."""
    async with running_bus(tmp_path, batch_size=7) as bus:
        subs = [bus.subscribe("one"), bus.subscribe("two")]
        for i in range(30):
            bus.publish(ev(i))
        for sub in subs:
            got = [await asyncio.wait_for(sub.receive(), 5) for _ in range(30)]
            assert [e.seq for e in got] == list(range(1, 31))
            assert [e.payload["n"] for e in got] == list(range(30))
            bus.unsubscribe(sub)
        # Each sink's drop counter exists at 0 from its subscription on (increase() sees a 1).
        assert bus.dropped == {"one": 0, "two": 0}


async def test_full_ingest_queue_drops_and_counts_under_journal(tmp_path: Path) -> None:
    """With the ingest queue full, publish returns False at once and counts under "journal"."""
    journal = Journal(tmp_path / "journal.db")
    bus = EventBus(journal, ingest_size=2)
    results = [bus.publish(ev(i)) for i in range(5)]
    assert results == [True, True, False, False, False]
    assert bus.dropped == {INGEST_SINK: 3}
    assert bus.received == {"lifecycle": 5}  # received counts everything offered
    bus.close()
    await asyncio.wait_for(bus.run(), 5)
    assert [e.payload["n"] for e in journal.read_since(0)] == [0, 1]
    journal.close()


async def test_slow_ordinary_sink_drops_and_counts_per_sink(tmp_path: Path) -> None:
    """A full ordinary sink loses events (counted under its name) but stays subscribed."""
    async with running_bus(tmp_path) as bus:
        slow = bus.subscribe("slow", size=2)
        fast = bus.subscribe("fast", size=100)
        for i in range(5):
            bus.publish(ev(i))
        await wait_until(lambda: bus.published_seq == 5)
        assert bus.dropped == {"slow": 3, "fast": 0}
        assert [(await slow.receive()).seq for _ in range(2)] == [1, 2]
        assert [(await fast.receive()).seq for _ in range(5)] == [1, 2, 3, 4, 5]
        assert not slow.overflowed
        bus.publish(ev(6))
        assert (await asyncio.wait_for(slow.receive(), 5)).seq == 6
        assert bus.dropped == {"slow": 3, "fast": 0}
        bus.unsubscribe(slow)
        bus.unsubscribe(fast)


async def test_disconnect_when_full_subscriber_is_cut_off(tmp_path: Path) -> None:
    """A full disconnect_when_full sink is cut off: it reads what it had, then iteration ends."""
    async with running_bus(tmp_path) as bus:
        stream = bus.subscribe("stream-x", size=2, disconnect_when_full=True)
        other = bus.subscribe("other", size=100)
        for i in range(5):
            bus.publish(ev(i))
        await wait_until(lambda: bus.published_seq == 5)
        assert stream.overflowed
        assert bus.dropped == {"stream-x": 1, "other": 0}
        got = []
        with anyio.fail_after(5):
            async for event in stream:
                got.append(event.seq)
        assert got == [1, 2]
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
        # Later events are not offered to it (nothing more counted), the other sink goes on.
        bus.publish(ev(6))
        await wait_until(lambda: bus.published_seq == 6)
        assert bus.dropped == {"stream-x": 1, "other": 0}
        assert [(await other.receive()).seq for _ in range(6)] == [1, 2, 3, 4, 5, 6]
        bus.unsubscribe(stream)
        bus.unsubscribe(other)


async def test_filters_by_domain_and_kind(tmp_path: Path) -> None:
    """A subscription gets only the events its filter matches."""
    async with running_bus(tmp_path) as bus:
        only_a = bus.subscribe("a", event_filter=EventFilter(domains=frozenset({"a"})))
        reboots = bus.subscribe("r", event_filter=EventFilter(kinds=frozenset({"reboot"})))
        everything = bus.subscribe("all")
        published = [ev(1, "a"), ev(2, "b"), ev(3, "a", "reboot"), ev(4, "b", "reboot"),
                     ev(5, None, "connection")]
        for event in published:
            bus.publish(event)
        await wait_until(lambda: bus.published_seq == 5)

        def pending(sub: Subscription) -> list[int]:
            out = []
            while True:
                try:
                    out.append(sub._receive.receive_nowait().payload["n"])
                except anyio.WouldBlock:
                    return out

        assert pending(only_a) == [1, 3]
        assert pending(reboots) == [3, 4]
        assert pending(everything) == [1, 2, 3, 4, 5]
        for sub in (only_a, reboots, everything):
            bus.unsubscribe(sub)


async def test_unsubscribed_sink_gets_nothing_more(tmp_path: Path) -> None:
    """After unsubscribe the sink is no longer offered events and nothing is counted for it."""
    async with running_bus(tmp_path) as bus:
        sub = bus.subscribe("gone")
        bus.unsubscribe(sub)
        bus.publish(ev(1))
        await wait_until(lambda: bus.published_seq == 1)
        assert bus.dropped == {"gone": 0}
        with pytest.raises(anyio.ClosedResourceError):
            await sub.receive()


async def test_close_makes_run_return_after_journaling_the_queue(tmp_path: Path) -> None:
    """close() with events still queued: run() journals and fans them out, then returns."""
    journal = Journal(tmp_path / "journal.db")
    bus = EventBus(journal, batch_size=4)
    sub = bus.subscribe("sink", size=100)
    for i in range(10):
        assert bus.publish(ev(i))
    bus.close()
    await asyncio.wait_for(bus.run(), 5)
    assert journal.count() == 10
    assert bus.published_seq == 10
    got = [(await sub.receive()).seq for _ in range(10)]
    assert got == list(range(1, 11))
    bus.unsubscribe(sub)
    journal.close()


async def test_close_while_running(tmp_path: Path) -> None:
    """close() while run() waits for events ends run() promptly."""
    journal = Journal(tmp_path / "journal.db")
    bus = EventBus(journal)
    task = asyncio.ensure_future(bus.run())
    bus.publish(ev(1))
    await wait_until(lambda: bus.published_seq == 1)
    bus.close()
    await asyncio.wait_for(task, 5)
    assert journal.count() == 1
    journal.close()


async def test_published_seq_continues_from_the_journal(tmp_path: Path) -> None:
    """A bus on a journal with history starts published_seq at its last sequence number."""
    journal = Journal(tmp_path / "journal.db")
    journal.append([ev(1), ev(2)])
    bus = EventBus(journal)
    assert bus.published_seq == 2
    bus.publish(ev(3))
    bus.close()
    await asyncio.wait_for(bus.run(), 5)
    assert bus.published_seq == 3
    journal.close()


async def test_a_failing_listener_does_not_stop_delivery(tmp_path: Path) -> None:
    """A listener that raises is logged; the subscribers still get the event."""
    async with running_bus(tmp_path) as bus:
        def broken(_event: Event) -> None:
            raise ValueError("boom")

        bus.add_listener(broken)
        sub = bus.subscribe("sink")
        with structlog.testing.capture_logs() as logs:
            bus.publish(ev(1))
            assert (await asyncio.wait_for(sub.receive(), 5)).seq == 1
        assert [entry["event"] for entry in logs] == ["virtmon.events.listener_failed"]
        bus.unsubscribe(sub)


async def test_publish_after_close_drops_and_counts(tmp_path: Path) -> None:
    """A publish during shutdown (after close) returns False and is counted, never raises."""
    journal = Journal(tmp_path / "journal.db")
    bus = EventBus(journal)
    bus.close()
    try:
        assert bus.publish(ev(1)) is False
        assert bus.dropped == {INGEST_SINK: 1}
    finally:
        await asyncio.wait_for(bus.run(), 5)
        journal.close()
