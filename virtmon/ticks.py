"""The one rule for periodic work: a fixed tick that keeps its phase.

Work that overruns its interval skips the ticks it missed rather than running them back to
back, and the next run starts on the original grid: the collection cycle (virtmon.scheduler)
and the rounds of the guest-agent poller and the job watcher (virtmon.virt.rounds) keep their
spacing whatever one run cost.
"""

from __future__ import annotations

import time

import anyio


def next_tick(previous: float, interval: float, now: float) -> float:
    """The first tick of the grid ``previous + k * interval`` (k >= 1) that is not past ``now``."""
    tick = previous + interval
    if tick < now:
        tick += interval * ((now - tick) // interval + 1)
    return tick


async def sleep_to_next_tick(previous: float, interval: float) -> float:
    """Sleep until the next tick after ``previous`` (``time.monotonic()`` values); that tick."""
    tick = next_tick(previous, interval, time.monotonic())
    await anyio.sleep(tick - time.monotonic())
    return tick
