"""Rounds of per-domain calls on a fixed tick while libvirt is connected (the guest-agent poller,
the job watcher), apart from the collection cycle."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from virtmon.ticks import sleep_to_next_tick
from virtmon.virt.connection import ConnectionSupervisor


async def run_rounds(supervisor: ConnectionSupervisor, interval: Callable[[], float],
                     one_round: Callable[[], Awaitable[None]]) -> None:
    """Forever: wait for the connection, run a round, sleep until the next tick
    (virtmon.ticks). ``interval`` is read at every tick (a reload may change it)."""
    next_tick = time.monotonic()
    while True:
        await supervisor.wait_connected()
        await one_round()
        next_tick = await sleep_to_next_tick(next_tick, interval())
