"""Event-impl traffic per libvirt RPC: loop wake-ups (self-pipe writes) and hooks run on the loop.

Every libvirt RPC made from a worker thread on a watched connection updates the connection's
watch (off, then on); the event implementation marshals that onto the loop. This counts, for
``--calls`` ``getLibVersion`` RPCs from one worker thread on ``test+unix:///default`` with the
loop otherwise idle, how many self-pipe writes (cross-thread wake-ups) and event-impl calls on
the loop each RPC costs, and the process CPU per RPC: on a watched connection, and on one opened
unwatched as the read-only pools open theirs (ADR 0006). The before/after figures of
docs/PERFORMANCE.md ("Profile", "The fixed cost of a cycle").

    python -m bench.bench_wakeups [--calls 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import libvirt

from bench import emit


async def measure(calls: int) -> dict[str, Any]:
    """Both kinds of connection, one after the other, in this process."""
    return {"watched": await measure_one(calls, watched=True),
            "unwatched": await measure_one(calls, watched=False)}


async def measure_one(calls: int, watched: bool) -> dict[str, Any]:
    """Warm up, then count and time ``calls`` RPCs from a worker thread on one connection."""
    from virtmon.virt.eventloop import register_event_impl
    from virtmon.virt.handle import ConnectionSettings, open_connection

    impl = register_event_impl()
    loop = asyncio.get_running_loop()
    counts = {"writes": 0, "hooks": 0}
    write_to_self = loop._write_to_self  # type: ignore[attr-defined]
    run_hook = impl._run

    def counting_write() -> None:
        counts["writes"] += 1
        write_to_self()

    def counting_run(fn: Any, args: tuple[Any, ...]) -> None:
        counts["hooks"] += 1
        run_hook(fn, args)

    loop._write_to_self = counting_write  # type: ignore[attr-defined]
    impl._run = counting_run  # type: ignore[method-assign]
    settings = ConnectionSettings(uri="test+unix:///default")
    conn = await asyncio.to_thread(open_connection, settings, watched)

    def work() -> None:
        for _ in range(calls):
            conn.getLibVersion()

    try:
        await asyncio.to_thread(work)  # warm-up
        counts.update(writes=0, hooks=0)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.to_thread(work)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await asyncio.to_thread(conn.close)
        await impl.drain()
        loop._write_to_self = write_to_self  # type: ignore[attr-defined]
        impl._run = run_hook  # type: ignore[method-assign]
    return {
        "calls": calls,
        "self_pipe_writes_per_rpc": round(counts["writes"] / calls, 3),
        "impl_hooks_on_loop_per_rpc": round(counts["hooks"] / calls, 3),
        "cpu_us_per_rpc": round(cpu / calls * 1e6, 1),
        "wall_us_per_rpc": round(wall / calls * 1e6, 1),
    }


def main() -> None:
    """Parse the arguments, measure, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    emit(asyncio.run(measure(args.calls)))


if __name__ == "__main__":
    main()
