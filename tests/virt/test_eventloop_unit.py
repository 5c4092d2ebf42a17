"""Unit tests of ThreadSafeEventImpl's hooks, called directly (no libvirt connection).

libvirt accepts one event implementation per process and the suite's conftest registers it, so
these tests never call ``register()``: they build their own ThreadSafeEventImpl on the running loop
and call the hooks libvirt would call, from the loop and from other threads.

The opaque is ``(None, None, None)``: libvirtaio frees a removed handle's opaque with
``libvirt.virEventInvokeFreeCallback(opaque)``, which calls ``libvirtmod`` with ``opaque[2]`` and
``opaque[1]`` (libvirt's free function and its data); NULL for both is a no-op, so the free path
runs for real here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import libvirt
import libvirtaio
import pytest
import structlog

from tests.waiting import wait_until
from virtmon.virt.eventloop import ThreadSafeEventImpl

OPAQUE = (None, None, None)
READABLE = libvirt.VIR_EVENT_HANDLE_READABLE


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in another thread and wait for it *blocking the loop*: the loop cannot help."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # pragma: no cover - reported below
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    if "error" in box:
        raise box["error"]
    return box.get("value")


async def run_threads(fn: Callable[[int], Any], count: int) -> list[Any]:
    """Run ``fn(n)`` in ``count`` real threads at once; the loop keeps running meanwhile."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def target(n: int) -> None:
        try:
            results[n] = fn(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    await wait_until(lambda: not any(t.is_alive() for t in threads), timeout=30)
    if errors:
        raise errors[0]
    return results


@pytest.fixture
async def impl() -> AsyncIterator[ThreadSafeEventImpl]:
    """A fresh implementation on the session loop; it must be idle again after the test."""
    impl = ThreadSafeEventImpl(asyncio.get_running_loop())
    yield impl
    await asyncio.wait_for(impl.drain(), 5)
    assert impl.is_idle(), "a test left a watch or timer behind"


@pytest.fixture
def pair() -> Any:
    """A connected socketpair (closed after the test)."""
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


async def test_ids_are_returned_synchronously_from_another_thread(
    impl: ThreadSafeEventImpl,
) -> None:
    """add_handle/add_timeout return an id in a non-loop thread while the loop is blocked."""
    r, w = os.pipe()
    try:
        watch, timer = in_thread(lambda: (
            impl.add_handle(r, READABLE, lambda *a: None, OPAQUE),
            impl.add_timeout(-1, lambda *a: None, OPAQUE),
        ))
        assert isinstance(watch, int) and isinstance(timer, int)
        assert watch > 0 and timer > 0 and watch != timer
        assert impl.live_count == 2
        assert not impl.is_idle()
        assert impl.remove_handle(watch) == 0
        assert impl.remove_timeout(timer) == 0
        await asyncio.wait_for(impl.drain(), 5)
    finally:
        os.close(r)
        os.close(w)


async def test_ids_are_unique_under_concurrency(impl: ThreadSafeEventImpl) -> None:
    """8 threads adding timers and handles at once get 8 x 200 distinct ids."""
    r, w = os.pipe()
    barrier = threading.Barrier(8)

    def worker(n: int) -> list[int]:
        barrier.wait()
        ids = []
        for i in range(200):
            if (n + i) % 2:
                ids.append(impl.add_timeout(-1, lambda *a: None, OPAQUE))
            else:
                ids.append(impl.add_handle(r, 0, lambda *a: None, OPAQUE))
        return ids

    try:
        results = await run_threads(worker, 8)
        ids = [ident for chunk in results for ident in chunk]
        assert len(ids) == 1600
        assert len(set(ids)) == 1600
        assert impl.live_count == 1600

        def remove_all(chunk: list[int], n: int) -> list[int]:
            hooks = (impl.remove_timeout, impl.remove_handle)
            return [hooks[(n + i) % 2 == 0](ident) for i, ident in enumerate(chunk)]

        codes = await run_threads(lambda n: remove_all(results[n], n), 8)
        assert {code for chunk in codes for code in chunk} == {0}
        await asyncio.wait_for(impl.drain(), 5)
        assert impl.is_idle()
    finally:
        os.close(r)
        os.close(w)


async def test_handle_dispatches_with_the_id_libvirt_was_given(
    impl: ThreadSafeEventImpl, pair: Any,
) -> None:
    """A readable socket dispatches cb(watch, fd, READABLE, opaque) with the wrapper's id."""
    # Move libvirtaio's own (process-wide) id counter away from ours, so that passing the inner
    # id instead of ours would be caught.
    libvirtaio.Callback._iden_counter = itertools.count(next(libvirtaio.Callback._iden_counter)
                                                        + 1000)
    a, b = pair
    calls: list[tuple[int, int, int, Any]] = []

    def cb(watch: int, fd: int, events: int, opaque: Any) -> None:
        calls.append((watch, fd, events, opaque))
        a.recv(1)

    watch = in_thread(lambda: impl.add_handle(a.fileno(), READABLE, cb, OPAQUE))
    await wait_until(lambda: watch in impl._inner_ids)
    assert impl._inner_ids[watch] != watch
    b.send(b"x")
    await wait_until(lambda: len(calls) == 1)
    assert calls == [(watch, a.fileno(), READABLE, OPAQUE)]
    assert impl.remove_handle(watch) == 0


async def test_update_handle_changes_what_is_watched(
    impl: ThreadSafeEventImpl, pair: Any,
) -> None:
    """A handle added with no events does not fire; update_handle to READABLE makes it fire."""
    a, b = pair
    calls: list[int] = []

    def cb(watch: int, fd: int, events: int, opaque: Any) -> None:
        calls.append(watch)
        a.recv(1)

    watch = in_thread(lambda: impl.add_handle(a.fileno(), 0, cb, OPAQUE))
    b.send(b"x")
    await asyncio.sleep(0.05)
    assert calls == []
    in_thread(lambda: impl.update_handle(watch, READABLE))
    await wait_until(lambda: calls == [watch])
    assert impl.remove_handle(watch) == 0


async def test_removed_handle_is_never_called_again(
    impl: ThreadSafeEventImpl, pair: Any,
) -> None:
    """After remove_handle the callback never runs again, although the fd stays readable."""
    a, b = pair
    calls: list[float] = []

    def cb(watch: int, fd: int, events: int, opaque: Any) -> None:
        calls.append(time.monotonic())  # never reads: the fd stays readable (level-triggered)

    watch = in_thread(lambda: impl.add_handle(a.fileno(), READABLE, cb, OPAQUE))
    b.send(b"x")
    await wait_until(lambda: len(calls) >= 3)
    assert in_thread(lambda: impl.remove_handle(watch)) == 0
    seen = len(calls)
    await asyncio.sleep(0.1)
    assert len(calls) == seen
    assert impl.remove_handle(watch) == -1  # a second removal is an error, as in libvirt


async def test_handle_removed_before_libvirtaio_applies_it_is_not_dispatched(
    impl: ThreadSafeEventImpl, pair: Any,
) -> None:
    """Two watches on one fd: the one removed by the other's callback is never dispatched.

    libvirtaio dispatches every callback of a descriptor from a snapshot, so the second one
    would run in the same round although it was removed: only the wrapper's dead mark stops it.
    """
    a, b = pair
    calls: list[int] = []
    ids: list[int] = []

    def cb(watch: int, fd: int, events: int, opaque: Any) -> None:
        calls.append(watch)
        for other in ids:
            if other != watch:
                impl.remove_handle(other)

    ids.extend(in_thread(lambda: [
        impl.add_handle(a.fileno(), READABLE, cb, OPAQUE) for _ in range(2)
    ]))
    await wait_until(lambda: all(i in impl._inner_ids for i in ids))
    b.send(b"x")
    await wait_until(lambda: len(calls) >= 2)
    assert len(set(calls)) == 1, f"a removed watch was dispatched: {calls}"
    assert impl.remove_handle(calls[0]) == 0


async def test_timer_with_timeout_zero_fires_and_stops_after_remove(
    impl: ThreadSafeEventImpl,
) -> None:
    """A 0 ms timer fires repeatedly with its id and opaque; after remove_timeout, never again."""
    calls: list[tuple[int, Any]] = []
    timer = in_thread(lambda: impl.add_timeout(0, lambda t, o: calls.append((t, o)), OPAQUE))
    await wait_until(lambda: len(calls) >= 3)
    assert set(calls) == {(timer, OPAQUE)}
    assert in_thread(lambda: impl.remove_timeout(timer)) == 0
    seen = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == seen
    assert impl.remove_timeout(timer) == -1


async def test_update_timeout_enables_and_disables_a_timer(impl: ThreadSafeEventImpl) -> None:
    """A timer added disabled (-1) fires only once update_timeout sets 0, and stops at -1 again."""
    calls: list[int] = []
    timer = impl.add_timeout(-1, lambda t, o: calls.append(t), OPAQUE)
    await asyncio.sleep(0.05)
    assert calls == []
    in_thread(lambda: impl.update_timeout(timer, 0))
    await wait_until(lambda: len(calls) >= 2)
    in_thread(lambda: impl.update_timeout(timer, -1))
    await asyncio.sleep(0.02)  # let the update and a possibly running round finish
    seen = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == seen
    assert impl.remove_timeout(timer) == 0


async def test_timer_period_is_honoured(impl: ThreadSafeEventImpl) -> None:
    """A 50 ms timer fires again and again, at least 50 ms apart: not on every loop iteration."""
    added = time.monotonic()
    calls: list[float] = []
    timer = impl.add_timeout(50, lambda t, o: calls.append(time.monotonic()), OPAQUE)
    await wait_until(lambda: len(calls) >= 4, 10)
    assert impl.remove_timeout(timer) == 0
    # The gaps, not a count in a window: a loaded machine makes them longer, never shorter.
    gaps = [b - a for a, b in itertools.pairwise([added, *calls])]
    assert min(gaps) >= 0.045, gaps


async def test_update_and_remove_of_unknown_ids(impl: ThreadSafeEventImpl) -> None:
    """Removing an id never given returns -1; updating it does nothing and raises nothing."""
    assert impl.remove_handle(12345) == -1
    assert impl.remove_timeout(12345) == -1
    impl.update_handle(12345, READABLE)
    impl.update_timeout(12345, 0)
    await asyncio.wait_for(impl.drain(), 5)


async def test_drain_returns_after_removals(impl: ThreadSafeEventImpl, pair: Any) -> None:
    """drain() waits for queued removals and libvirtaio's frees; the impl is idle afterwards."""
    a, _b = pair
    ids = in_thread(lambda: [
        *(impl.add_timeout(0, lambda *x: None, OPAQUE) for _ in range(5)),
        *(impl.add_handle(a.fileno(), READABLE, lambda *x: None, OPAQUE) for _ in range(5)),
    ])
    assert not impl.is_idle()

    def remove_all() -> None:
        for ident in ids[:5]:
            impl.remove_timeout(ident)
        for ident in ids[5:]:
            impl.remove_handle(ident)

    in_thread(remove_all)
    assert impl.live_count == 0
    assert not impl.is_idle()  # removals queued, frees not yet run
    await asyncio.wait_for(impl.drain(), 5)
    assert impl.is_idle()
    assert impl._inner_ids == {}


async def test_calls_from_threads_in_debug_mode_are_thread_safe(
    impl: ThreadSafeEventImpl, pair: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    """With loop debug on, 8 threads adding/updating/removing hooks trip no asyncio check."""
    loop = asyncio.get_running_loop()
    a, _b = pair
    fired: list[int] = []
    errors: list[BaseException] = []

    def worker(_n: int) -> None:
        try:
            for i in range(50):
                timer = impl.add_timeout(-1, lambda t, o: fired.append(t), OPAQUE)
                watch = impl.add_handle(a.fileno(), 0, lambda *x: None, OPAQUE)
                impl.update_handle(watch, READABLE)
                impl.update_timeout(timer, 0)  # starts libvirtaio's timer task
                if i % 10 == 0:  # now and then let the timer fire before removing it
                    deadline = time.monotonic() + 5
                    while timer not in fired and time.monotonic() < deadline:
                        time.sleep(0.001)
                impl.remove_timeout(timer)
                impl.remove_handle(watch)
        except BaseException as exc:
            errors.append(exc)

    was_debug = loop.get_debug()
    loop.set_debug(True)
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"), \
                structlog.testing.capture_logs() as logs:
            await run_threads(worker, 8)
            await asyncio.wait_for(impl.drain(), 10)
    finally:
        loop.set_debug(was_debug)
    assert errors == []
    assert len(set(fired)) >= 8 * 5, "timers did not fire: the test exercised nothing"
    assert [log for log in logs if log.get("event") == "virtmon.eventloop.hook_failed"] == []
    assert [r for r in caplog.records if "Non-thread-safe" in r.getMessage()
            or r.levelno >= logging.ERROR] == []
    assert impl.is_idle()



async def test_updates_of_one_watch_coalesce_behind_its_add(
    impl: ThreadSafeEventImpl, pair: Any,
) -> None:
    """100 updates of a new watch while the loop is blocked queue one call, after the add."""
    a, b = pair
    calls: list[int] = []

    def cb(watch: int, fd: int, events: int, opaque: Any) -> None:
        calls.append(watch)
        a.recv(1)

    def add_and_toggle() -> int:
        watch = impl.add_handle(a.fileno(), 0, cb, OPAQUE)
        for i in range(100):
            impl.update_handle(watch, 0 if i % 2 else READABLE)  # the last one is READABLE
        impl.update_handle(watch, READABLE)
        return watch

    watch = in_thread(add_and_toggle)
    assert impl._queued == 2  # the add and one update carrying the latest value
    b.send(b"x")
    await wait_until(lambda: calls == [watch])
    assert impl.remove_handle(watch) == 0


async def test_coalesced_update_applies_the_latest_value(
    impl: ThreadSafeEventImpl, pair: Any,
) -> None:
    """A watch toggled READABLE/off ending off, while the loop is blocked, is not dispatched."""
    a, b = pair
    calls: list[int] = []
    watch = in_thread(lambda: impl.add_handle(a.fileno(), READABLE, lambda *x: calls.append(1),
                                              OPAQUE))
    await wait_until(lambda: watch in impl._inner_ids)

    def toggle() -> None:
        for events in (0, READABLE, 0, READABLE, 0):
            impl.update_handle(watch, events)

    in_thread(toggle)
    assert impl._queued == 1
    b.send(b"x")
    await asyncio.wait_for(impl.drain(), 5)
    await asyncio.sleep(0.05)
    assert calls == []
    # The control: the byte is there, and the same watch set READABLE gets it.
    in_thread(lambda: impl.update_handle(watch, READABLE))
    await wait_until(lambda: bool(calls), 5)
    assert impl.remove_handle(watch) == 0


async def test_update_queued_before_a_remove_is_never_applied(
    impl: ThreadSafeEventImpl, pair: Any,
) -> None:
    """Updated then removed while the loop is blocked: no dispatch; later updates are ignored."""
    a, b = pair
    calls: list[int] = []
    watch = in_thread(lambda: impl.add_handle(a.fileno(), 0, lambda *x: calls.append(1), OPAQUE))
    await wait_until(lambda: watch in impl._inner_ids)

    def update_remove_update() -> int:
        impl.update_handle(watch, READABLE)
        code = impl.remove_handle(watch)
        impl.update_handle(watch, READABLE)  # after the remove: ignored, nothing queued
        return code

    assert in_thread(update_remove_update) == 0
    assert impl._queued == 2  # the update (it will find the id dead) and the remove
    b.send(b"x")
    await asyncio.wait_for(impl.drain(), 5)
    await asyncio.sleep(0.05)
    assert calls == []
    assert impl._updates == {} and impl._applied == {}
    # The control: a new READABLE watch on the same socket gets the byte.
    control = in_thread(lambda: impl.add_handle(a.fileno(), READABLE,
                                                lambda *x: calls.append(2), OPAQUE))
    await wait_until(lambda: bool(calls), 5)
    assert calls[0] == 2
    assert impl.remove_handle(control) == 0


async def test_timer_updates_coalesce_and_the_timer_fires(impl: ThreadSafeEventImpl) -> None:
    """A disabled timer toggled -1/0 ending 0 while the loop is blocked: one update, it fires."""
    calls: list[int] = []

    def add_and_toggle() -> int:
        timer = impl.add_timeout(-1, lambda t, o: calls.append(t), OPAQUE)
        for timeout in (0, -1, 0, -1, 0):
            impl.update_timeout(timer, timeout)
        return timer

    timer = in_thread(add_and_toggle)
    assert impl._queued == 2
    await wait_until(lambda: len(calls) >= 2)
    assert set(calls) == {timer}
    assert impl.remove_timeout(timer) == 0


async def test_hooks_called_on_the_loop_thread_do_not_wake_it_through_the_self_pipe(
    impl: ThreadSafeEventImpl, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From the loop thread, add/update/remove use call_soon, in order: the timer fires, stops."""
    loop = asyncio.get_running_loop()
    crossings: list[Any] = []
    original = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        crossings.append(args[1] if len(args) > 1 else None)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    calls: list[int] = []
    timer = impl.add_timeout(-1, lambda t, o: calls.append(t), OPAQUE)
    impl.update_timeout(timer, 0)
    await wait_until(lambda: len(calls) >= 2)
    assert impl.remove_timeout(timer) == 0
    await asyncio.wait_for(impl.drain(), 5)
    seen = len(calls)
    await asyncio.sleep(0.02)
    assert len(calls) == seen
    assert [c for c in crossings if getattr(c, "__self__", None) is impl] == []


async def test_an_update_on_the_loop_with_nothing_queued_applies_before_the_hook_returns(
    impl: ThreadSafeEventImpl, pair: Any,
) -> None:
    """Made on the loop thread with nothing queued, an update reaches libvirtaio at once (there
    is nothing to overtake); with another thread's add still queued, the update of that watch
    waits behind it and applies after it."""
    a, _b = pair
    timer = impl.add_timeout(-1, lambda t, o: None, OPAQUE)
    await asyncio.wait_for(impl.drain(), 5)
    impl.update_timeout(timer, 1000)
    assert impl._applied[timer] == 1000 and impl._queued == 0
    watch = in_thread(lambda: impl.add_handle(a.fileno(), 0, lambda *x: None, OPAQUE))
    impl.update_handle(watch, READABLE)
    assert impl._queued == 2 and watch not in impl._applied
    await asyncio.wait_for(impl.drain(), 5)
    assert impl._applied[watch] == READABLE
    assert impl.remove_timeout(timer) == 0 and impl.remove_handle(watch) == 0
