"""Waiting in tests for something the daemon does on its own time: polled, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, poll: float = 0.005
) -> None:
    """Let the loop run until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(poll)


async def next_cycle(scheduler: Any, timeout: float = 30.0) -> None:
    """Wait for the daemon's next published cycle; fail (not hang) if none comes."""
    await asyncio.wait_for(scheduler.wait_cycle(), timeout)


async def fresh_cycle(scheduler: Any, timeout: float = 60.0) -> None:
    """Return once a cycle that began after this call has published a fresh snapshot.

    The cycle in flight at the call may have read libvirt before it, and a cycle that overran
    its deadline on a loaded machine re-exports an older snapshot: both are waited past.
    """
    deadline = time.monotonic() + timeout
    first = scheduler.stats.cycles + 2  # cycles run one after another
    while True:
        previous = scheduler.snapshot
        await next_cycle(scheduler, max(deadline - time.monotonic(), 0.001))
        if scheduler.stats.cycles >= first and scheduler.snapshot is not previous:
            return


async def exposition_until(
    scheduler: Any, predicate: Callable[[str], bool], timeout: float = 30.0
) -> str:
    """The daemon's exposition text once ``predicate`` holds for it, waiting cycle by cycle."""
    deadline = time.monotonic() + timeout
    while not predicate(text := scheduler.exposition.text.decode()):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no exposition satisfied the check within {timeout} s")
        await next_cycle(scheduler, remaining)
    return text
