"""Domain cache resync benchmark: what waits while every domain's XML is read again.

A virtmon Daemon runs in this process on libvirtd's test driver with a node file of
``--domains`` test domains (``test+unix:///PATH.xml``), collecting every ``--interval``
seconds. Once it runs, the cache is told to resync (as after a reconnect, or every
``collect.resync_interval``), and while the resync reads, every ``--event-every`` seconds one
domain's ``undefined`` and ``defined`` events are published into the daemon's bus (as libvirt's
callback would): the first drops the domain from the cache, the second marks it to be read
again. Figures:

- the resync's wall time (from the request to the cache's end of it);
- an event's wait: from its ``defined`` reaching the cache (a bus listener after the cache's)
  to its domain's facts back in the cache (p50, max);
- collection cycles during the resync against cycles before it (duration p50, max; none may
  take longer because of the resync, since cycles read on connections of their own);
- the loop's lag during the resync.

    python -m bench.bench_resync [--domains 5000] [--resyncs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench import (
    LagMeter,
    daemon_config,
    emit,
    median,
    node_file_uri,
    percentile,
    quiet_logging,
    running_daemon,
    short_tmp,
)
from tests.waiting import wait_until


class CycleTimes:
    """Each finished cycle's duration, with the time it ended."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.ended: list[tuple[float, float]] = []
        daemon.scheduler.cycle_listeners.append(self.on_cycle)

    def on_cycle(self, _families: Any) -> None:
        """A cycle listener (called on the loop when a cycle's families are ready)."""
        self.ended.append((time.monotonic(), self.daemon.scheduler.stats.last_duration))

    def between(self, start: float, end: float) -> list[float]:
        """Durations of the cycles that ended in ``[start, end]``."""
        return [duration for at, duration in self.ended if start <= at <= end]


async def one_resync(daemon: Any, event_every: float, uri: str) -> dict[str, Any]:
    """Ask for a resync; publish event pairs while it runs; how long each event waited."""
    from virtmon.events.model import Event

    cache = daemon.domain_cache
    waits: list[float] = []
    published: set[str] = set()  # uuids whose event pair is not yet delivered to the cache
    pending: dict[str, float] = {}  # uuid → when its "defined" reached the cache
    drained = asyncio.Event()  # every published event's domain is back

    def on_event(event: Any) -> None:  # a bus listener after the cache's: it has seen it
        if event.name == "defined" and event.uuid in published:
            published.discard(event.uuid)
            pending[event.uuid] = time.monotonic()

    async def watch() -> None:
        while True:
            for uuid, marked in list(pending.items()):
                if uuid in cache.info:
                    waits.append(time.monotonic() - marked)
                    del pending[uuid]
            if not pending and not published:
                drained.set()
            await asyncio.sleep(0.001)

    daemon.bus.add_listener(on_event)
    watcher = asyncio.ensure_future(watch())
    started = time.monotonic()
    resyncs = cache.resyncs
    cache._resync_due = True
    cache._wake.set()
    try:
        while cache.resyncs == resyncs:
            candidates = [u for u in list(cache.info)[::97]
                          if u not in pending and u not in published]
            if candidates:
                uuid = candidates[len(waits) % len(candidates)]
                name = cache.info[uuid].name
                for what in ("undefined", "defined"):
                    daemon.bus.publish(Event(time=time.time(), uri=uri, kind="lifecycle",
                                             name=what, uuid=uuid, domain=name))
                published.add(uuid)
                drained.clear()
            await asyncio.sleep(event_every)
        ended = time.monotonic()
        await asyncio.wait_for(drained.wait(), 60)
    finally:
        watcher.cancel()
        daemon.bus._listeners.remove(on_event)
    return {"resync_s": ended - started, "started": started, "ended": ended, "waits": waits}


async def measure(domains: int, resyncs: int, event_every: float, interval: float
                  ) -> dict[str, Any]:
    """Run the daemon on a node of ``domains`` test domains and resync ``resyncs`` times."""
    with node_file_uri(domains) as uri, short_tmp() as tmp:
        cfg = daemon_config(tmp, uri, interval, collect={"collectors": {"admin": False}})
        start = time.monotonic()
        async with running_daemon(cfg) as daemon:
            start_up = time.monotonic() - start
            # The first read (it may outlast start-up, which waits a cycle's deadline for it).
            await wait_until(lambda: daemon.domain_cache.resyncs > 0, 120, 0.1)
            cycles = CycleTimes(daemon)
            await asyncio.sleep(3 * interval)  # cycles without a resync, to compare with
            quiet_end = time.monotonic()
            meter = LagMeter()
            runs = []
            async with meter.running():
                for _ in range(resyncs):
                    runs.append(await one_resync(daemon, event_every, uri))
                    await asyncio.sleep(1)
            quiet = cycles.between(quiet_end - 3 * interval, quiet_end)
            during = [d for run in runs for d in cycles.between(run["started"], run["ended"])]
            waits = [w for run in runs for w in run["waits"]]
            cached = len(daemon.domain_cache.info)
    ms = 1e3
    return {
        "domains": domains,
        "domains_cached": cached,
        "resyncs": resyncs,
        "daemon_start_s": round(start_up, 3),
        "resync_s_median": round(median([r["resync_s"] for r in runs]), 3),
        "resync_s": [round(r["resync_s"], 3) for r in runs],
        "events": len(waits),
        "event_wait_p50_ms": round(percentile(waits, 0.5) * ms, 1),
        "event_wait_max_ms": round(max(waits, default=0.0) * ms, 1),
        "cycles_quiet": len(quiet),
        "cycle_quiet_p50_ms": round(percentile(quiet, 0.5) * ms, 1),
        "cycle_quiet_max_ms": round(max(quiet, default=0.0) * ms, 1),
        "cycles_during_resync": len(during),
        "cycle_during_resync_p50_ms": round(percentile(during, 0.5) * ms, 1),
        "cycle_during_resync_max_ms": round(max(during, default=0.0) * ms, 1),
        **meter.summary("loop_lag_during_resync"),
    }


def main() -> None:
    """Parse the arguments and print the JSON result."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--domains", type=int, default=5000)
    parser.add_argument("--resyncs", type=int, default=3)
    parser.add_argument("--interval", type=float, default=2.0,
                        help="collection interval (seconds; a cycle's deadline is 80 %% of it)")
    parser.add_argument("--event-every", type=float, default=0.1,
                        help="seconds between two event pairs during a resync")
    args = parser.parse_args()
    quiet_logging()
    emit(asyncio.run(measure(args.domains, args.resyncs, args.event_every, args.interval)))


if __name__ == "__main__":
    main()
