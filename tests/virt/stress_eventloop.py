"""Stress libvirt's event implementation from many threads; print one JSON result line.

Run with ``PYTHONASYNCIODEBUG=1`` so that asyncio's debug mode is on from the loop's creation (it
then raises on non-thread-safe calls instead of racing silently). The script registers an event
implementation (virtmon's :class:`ThreadSafeEventImpl`, or libvirtaio's plain one for contrast),
subscribes one connection to lifecycle events, and runs worker threads, each with its own
connection opened *after* the registration, so that libvirt invokes the event hooks from those
threads. Each worker defines, starts, destroys and undefines uniquely named test-driver domains and
calls ``getAllDomainStats`` in between. The result counts the lifecycle events expected for the
workers' domains and those received, and the loop lag measured by a ticker.

    PYTHONASYNCIODEBUG=1 python -m tests.virt.stress_eventloop [--impl virtmon|libvirtaio]
        [--uri test+unix:///default] [--threads 8] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import libvirt
import libvirtaio
import structlog

# (domain name, lifecycle event name)
Key = tuple[str, str]

LIFECYCLE_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
}
TICK = 0.005
# asyncio debug mode reports a callback slower than this. Its default (0.1 s) is wall time, and
# on the lab's 2 cores, with 8 worker threads contending for the GIL (each hook call capturing a
# stack in debug mode) and other work sharing the machine, a trivial callback can wait that long
# for the GIL. Only a callback stuck for seconds (a hook deadlocked or a call blocking the loop)
# is what the check is for; the loop's lag is a benchmark's figure (bench/bench_events.py).
SLOW_CALLBACK = 2.0


def domain_xml(name: str) -> str:
    """The smallest test-driver domain."""
    return (f"<domain type='test'><name>{name}</name><memory>8192</memory>"
            "<os><type>hvm</type></os></domain>")


@dataclass
class Tally:
    """What the workers did and what the subscriber saw (workers and the loop write to it)."""

    expected: Counter[Key] = field(default_factory=Counter)
    received: Counter[Key] = field(default_factory=Counter)
    stats_calls: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expect(self, name: str, event: str) -> None:
        """A call that succeeded and must produce ``event`` for ``name``."""
        with self.lock:
            self.expected[(name, event)] += 1


def worker(uri: str, prefix: str, index: int, stop: threading.Event, tally: Tally) -> None:
    """Open a connection in this thread and cycle domains until ``stop`` is set."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        with tally.lock:
            tally.errors.append(f"worker {index} open: {exc}")
        return
    serial = 0
    try:
        while not stop.is_set():
            name = f"{prefix}-{index}-{serial}"
            serial += 1
            try:
                dom = conn.defineXML(domain_xml(name))
                tally.expect(name, "defined")
                dom.create()
                tally.expect(name, "started")
                conn.getAllDomainStats(0, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
                dom.destroy()
                tally.expect(name, "stopped")
                dom.undefine()
                tally.expect(name, "undefined")
                with tally.lock:
                    tally.stats_calls += 1
            except libvirt.libvirtError as exc:
                with tally.lock:
                    tally.errors.append(f"worker {index} {name}: {exc}")
                return
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    """Sleep ``TICK`` again and again; record how late each wake-up was (the loop's lag)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + TICK
        await asyncio.sleep(TICK)
        lags.append(max(0.0, loop.time() - due))


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def stress(args: argparse.Namespace) -> dict[str, Any]:
    """Register, subscribe, run the workers, wait for the events, and tally."""
    loop = asyncio.get_running_loop()
    loop.slow_callback_duration = SLOW_CALLBACK
    drain: Any = None
    if args.impl == "virtmon":
        from virtmon.virt.eventloop import register_event_impl

        drain = register_event_impl().drain
    else:
        libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    prefix = f"stress-{os.getpid()}-{args.impl}"
    tally = Tally()
    all_received = 0
    total_expected: int | None = None  # known once the workers have stopped
    complete = asyncio.Event()

    def check_complete() -> None:
        if total_expected is not None and sum(tally.received.values()) >= total_expected:
            complete.set()

    def on_lifecycle(_conn: Any, dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        nonlocal all_received
        all_received += 1
        name = dom.name()
        if name.startswith(prefix) and event in LIFECYCLE_NAMES:
            tally.received[(name, LIFECYCLE_NAMES[event])] += 1
            check_complete()

    # The subscriber's connection is opened in a worker thread too: libvirt calls never run on
    # the loop thread (rule 1), so its watch is added from that thread as well.
    conn = await asyncio.to_thread(libvirt.openReadOnly, args.uri)
    callback = await asyncio.to_thread(
        conn.domainEventRegisterAny, None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle,
        None,
    )
    lags: list[float] = []
    stop_ticker = asyncio.Event()
    tick_task = asyncio.ensure_future(ticker(lags, stop_ticker))
    stop = threading.Event()
    threads = [
        threading.Thread(target=worker, args=(args.uri, prefix, i, stop, tally), daemon=True)
        for i in range(args.threads)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    await asyncio.sleep(args.seconds)
    stop.set()

    def join_all() -> None:
        for thread in threads:
            thread.join(30)

    await asyncio.to_thread(join_all)
    ran = time.monotonic() - started
    # Wait for the events still in flight, up to a bound.
    total_expected = sum(tally.expected.values())
    check_complete()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), args.settle)
    waited = time.monotonic() - started - ran
    stop_ticker.set()
    await tick_task
    with contextlib.suppress(libvirt.libvirtError):
        await asyncio.to_thread(conn.domainEventDeregisterAny, callback)
    await asyncio.to_thread(conn.close)
    if drain is not None:
        await asyncio.wait_for(drain(), 10)
    missing = tally.expected - tally.received
    unexpected = tally.received - tally.expected
    return {
        "impl": args.impl,
        "uri": args.uri,
        "threads": args.threads,
        "seconds": round(ran, 3),
        "settle_seconds": round(waited, 3),
        "asyncio_debug": loop.get_debug(),
        "domains": len({name for name, _ in tally.expected}),
        "stats_calls": tally.stats_calls,
        "expected": sum(tally.expected.values()),
        "received": sum(tally.received.values()),
        "received_all_domains": all_received,
        "missing": sum(missing.values()),
        "missing_sample": [f"{n}:{e}" for n, e in list(missing)[:10]],
        "unexpected": sum(unexpected.values()),
        "events_per_second": round(sum(tally.received.values()) / ran, 1),
        "worker_errors": tally.errors[:10],
        "loop_lag_samples": len(lags),
        "loop_lag_p50_ms": round(percentile(lags, 0.50) * 1e3, 3),
        "loop_lag_p99_ms": round(percentile(lags, 0.99) * 1e3, 3),
        "loop_lag_max_ms": round(max(lags, default=0.0) * 1e3, 3),
    }


def main() -> int:
    """Parse the arguments, run the stress, print the result as one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="python -m tests.virt.stress_eventloop")
    parser.add_argument("--impl", choices=("virtmon", "libvirtaio"), default="virtmon")
    parser.add_argument("--uri", default="test+unix:///default")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=5.0,
                        help="how long to wait for events in flight after the workers stop")
    args = parser.parse_args()
    # virtmon logs hook failures through structlog: to stderr, where the test looks for them.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    result = asyncio.run(stress(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
