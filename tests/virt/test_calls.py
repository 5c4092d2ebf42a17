"""Tests of LibvirtCaller: worker threads, deadlines, abandoned calls bounded, capacity limit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from tests.waiting import wait_until
from virtmon.virt.calls import CallTimeout, LibvirtCaller, TooManyAbandoned


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event that blocked worker threads wait on; always set at teardown to free them."""
    event = threading.Event()
    yield event
    event.set()


async def test_call_returns_the_value_from_a_worker_thread() -> None:
    """call() runs the function in a thread other than the loop's and returns its value."""
    caller = LibvirtCaller(capacity=2, default_deadline=5)
    loop_thread = threading.get_ident()

    def add(x: int, y: int = 0) -> tuple[int, int]:
        return threading.get_ident(), x + y

    worker, value = await caller.call(add, 40, y=2)
    assert value == 42
    assert worker != loop_thread


async def test_call_propagates_the_function_s_exception() -> None:
    """An exception raised in the worker reaches the caller unchanged and abandons nothing."""
    caller = LibvirtCaller()

    def fail() -> None:
        raise LookupError("no domain")

    with pytest.raises(LookupError, match="no domain"):
        await caller.call(fail)
    assert (caller.abandoned_total, caller.abandoned_outstanding) == (0, 0)


async def test_overrunning_call_times_out_and_is_counted(gate: threading.Event) -> None:
    """A blocked call raises CallTimeout at its deadline; abandoned_outstanding drops to 0 later."""
    caller = LibvirtCaller(capacity=2, default_deadline=60, max_abandoned=4)
    returned = threading.Event()

    def blocked() -> str:
        gate.wait(30)
        returned.set()
        return "late"

    started = time.monotonic()
    with pytest.raises(CallTimeout) as caught:
        await caller.call_with_deadline(0.2, blocked)
    elapsed = time.monotonic() - started
    # At its own 0.2 s: not at the default deadline (60 s), nor when the call returns (30 s or
    # the gate); the upper bound leaves a loaded machine plenty of room.
    assert 0.15 < elapsed < 20
    assert "blocked" in caught.value.name
    assert isinstance(caught.value, TimeoutError)
    assert caller.abandoned_total == 1
    assert caller.abandoned_outstanding == 1
    assert not returned.is_set()

    gate.set()  # libvirt finally answers
    await wait_until(lambda: caller.abandoned_outstanding == 0)
    assert returned.is_set()
    assert caller.abandoned_total == 1  # a total, not a gauge


async def test_an_abandoned_call_gives_its_capacity_slot_back(gate: threading.Event) -> None:
    """With capacity 1, a call abandoned at its deadline does not keep the next call waiting."""
    caller = LibvirtCaller(capacity=1, default_deadline=5, max_abandoned=4)
    with pytest.raises(CallTimeout):
        await caller.call_with_deadline(0.1, gate.wait, 30)
    # Were the slot still taken, this would wait for it until its deadline: 10 s, less than the
    # 30 s the abandoned call stays blocked.
    assert await caller.call_with_deadline(10.0, lambda: "next") == "next"


async def test_max_abandoned_refuses_new_calls_at_once(gate: threading.Event) -> None:
    """At max_abandoned outstanding, a new call raises TooManyAbandoned without running fn."""
    caller = LibvirtCaller(capacity=4, default_deadline=60, max_abandoned=2)
    for _ in range(2):
        with pytest.raises(CallTimeout):
            await caller.call_with_deadline(0.1, gate.wait, 30)
    assert caller.abandoned_outstanding == 2
    ran = threading.Event()
    started = time.monotonic()
    with pytest.raises(TooManyAbandoned, match="2 abandoned"):
        await caller.call(ran.set)
    # At once, not after waiting out its deadline (60 s) for an abandoned call to return; the
    # bound leaves a loaded machine plenty of room.
    assert time.monotonic() - started < 20
    assert not ran.is_set()

    gate.set()
    await wait_until(lambda: caller.abandoned_outstanding == 0)
    assert await caller.call(lambda: "again") == "again"
    assert caller.abandoned_total == 2


async def test_capacity_limits_concurrent_calls() -> None:
    """No more than ``capacity`` calls run at the same time, and all of them complete."""
    caller = LibvirtCaller(capacity=3, default_deadline=60)
    lock = threading.Lock()
    # Calls go in by threes (12 of them: four rounds): three do run at once, however slowly
    # their threads start. With fewer slots the barrier breaks (the test fails, not hangs).
    together = threading.Barrier(3, timeout=30)
    running = 0
    peak = 0

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        together.wait()
        time.sleep(0.01)  # still running: a fourth call let in now would be seen
        with lock:
            running -= 1
        return i

    results = await asyncio.gather(*(caller.call(work, i) for i in range(12)))
    assert results == list(range(12))
    assert peak == 3


async def test_call_waiting_for_capacity_that_times_out_is_not_abandoned(
    gate: threading.Event,
) -> None:
    """A call whose deadline passes while it waits for a slot never runs and is not counted;
    the control, a call still waiting when the slot frees, runs within the same wait."""
    caller = LibvirtCaller(capacity=1, default_deadline=10, max_abandoned=4)
    ran = threading.Event()
    holding = threading.Event()

    def hold() -> bool:
        holding.set()
        return gate.wait(30)

    holder = asyncio.ensure_future(caller.call_with_deadline(30, hold))
    await wait_until(holding.is_set, 10)  # the holder has the only slot
    with pytest.raises(CallTimeout):
        await caller.call_with_deadline(0.1, ran.set)
    assert caller.abandoned_total == 0
    control = threading.Event()
    waiting = asyncio.ensure_future(caller.call_with_deadline(30, control.set))
    gate.set()
    assert await holder is True
    await wait_until(control.is_set, 0.5)
    await waiting
    await asyncio.sleep(0.5)
    assert not ran.is_set()


async def test_call_timeout_names_the_configured_deadline(gate: threading.Event) -> None:
    """CallTimeout.deadline is the deadline the call was given."""
    caller = LibvirtCaller(max_abandoned=4)
    with pytest.raises(CallTimeout) as caught:
        await caller.call_with_deadline(0.1, gate.wait, 30)
    assert caught.value.deadline == 0.1
    assert str(caught.value).endswith("overran its deadline of 0.1 s")
