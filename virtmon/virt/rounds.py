"""Rounds of per-domain calls on a fixed tick while libvirt is connected (the guest-agent poller,
the job watcher), apart from the collection cycle."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from virtmon.virt.connection import ConnectionSupervisor


async def run_rounds(supervisor: ConnectionSupervisor, interval: Callable[[], float],
                     one_round: Callable[[], Awaitable[None]]) -> None:
    """Forever: wait for the connection, run a round, sleep until the next tick. ``interval``
    is read at every tick (a reload may change it); a round that overran skips the ticks it
    missed and keeps the phase."""
    next_tick = time.monotonic()
    while True:
        await supervisor.wait_connected()
        await one_round()
        every = interval()
        next_tick += every
        now = time.monotonic()
        if next_tick < now:
            next_tick += every * ((now - next_tick) // every + 1)
        await anyio.sleep(next_tick - now)
