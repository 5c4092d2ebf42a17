"""Events benchmark: libvirt callback → bus → journal → stream subscriber, end to end.

A virtmon Daemon runs in this process on libvirtd's test driver (``test+unix:///default``). A
generator process defines and undefines uniquely named test domains from many threads (each
``define`` gives a lifecycle ``defined`` event, each ``undefine`` an ``undefined`` one); a
subscriber process follows ``GET /v1/events`` (NDJSON) on the control socket. Latency is the
subscriber's arrival time minus the event's ``time`` field, which virtmon sets in the libvirt
callback. Also: events lost (expected by the generator, not received), drops counted by the bus,
and the daemon loop's lag during the storm.

    python -m bench.bench_events [--threads 8] [--seconds 10]
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
from typing import Any

import libvirt

from bench import (
    LagMeter,
    Pacer,
    daemon_config,
    emit,
    minimal_domain_xml,
    percentile,
    quiet_logging,
    rss_mib,
    run_load_threads,
    running_daemon,
    short_tmp,
)

URI = "test+unix:///default"


# -- the generator (a process of its own) ------------------------------------------------------


def generate(uri: str, prefix: str, threads: int, seconds: float, rate: float) -> dict[str, Any]:
    """Define and undefine test domains from ``threads`` threads for ``seconds``.

    ``rate`` paces the threads to that many events per second in total (0: as fast as they go).
    """
    period = 2 * threads / rate if rate > 0 else 0.0  # seconds between one thread's pairs
    lock = threading.Lock()
    counts = {"expected": 0}
    errors: list[str] = []

    def work(conn: Any, index: int, stop: threading.Event) -> None:
        pacer = Pacer(period, period * index / threads)
        serial = 0
        while not stop.is_set():
            pacer.wait()
            try:
                dom = conn.defineXML(minimal_domain_xml(f"{prefix}-{index}-{serial}"))
                dom.undefine()
            except libvirt.libvirtError as exc:
                with lock:
                    errors.append(str(exc))
                return
            serial += 1
            with lock:
                counts["expected"] += 2

    started = time.time()
    run_load_threads(uri, threads, seconds, work)
    return {"expected": counts["expected"], "started": started, "ended": time.time(),
            "errors": errors[:5]}


# -- the subscriber (a process of its own) ------------------------------------------------------


async def subscribe(socket: str, prefix: str, settle: float) -> dict[str, Any]:
    """Follow the stream; after the expected count arrives on stdin, wait for it and report."""
    import aiohttp

    latencies: list[float] = []
    first_time: float | None = None
    last_arrival = 0.0
    notices: list[str] = []
    enough = asyncio.Event()
    expected: int | None = None

    async def read(response: aiohttp.ClientResponse) -> None:
        try:
            await read_lines(response)
        finally:
            enough.set()  # the stream ended (cut off as too slow) or everything arrived

    async def read_lines(response: aiohttp.ClientResponse) -> None:
        nonlocal first_time, last_arrival
        async for line in response.content:
            arrival = time.time()
            item = json.loads(line)
            if "seq" not in item:
                notices.append(line.decode().strip())
                continue
            if not (item.get("domain") or "").startswith(prefix):
                continue
            latencies.append(arrival - item["time"])
            if first_time is None:
                first_time = item["time"]
            last_arrival = arrival
            if expected is not None and len(latencies) >= expected:
                enough.set()

    connector = aiohttp.UnixConnector(path=socket)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(
        "http://virtmon/v1/events?follow=1&kind=lifecycle",
        timeout=aiohttp.ClientTimeout(total=None),
    ) as response:
        print("ready", flush=True)
        reader = asyncio.ensure_future(read(response))
        line = await asyncio.to_thread(sys.stdin.readline)
        expected = int(line.strip() or 0)
        if len(latencies) >= expected:
            enough.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), settle)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await reader
    return {
        "received": len(latencies),
        "first_event_time": first_time,
        "last_arrival": last_arrival,
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1e3, 3),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
        "latency_max_ms": round(max(latencies, default=0.0) * 1e3, 3),
        "notices": notices[:3],
    }


# -- the daemon side (this process) -------------------------------------------------------------


async def measure(threads: int, seconds: float, rate: float) -> dict[str, Any]:
    """Run the daemon, the subscriber and the generator; put their figures together."""
    from virtmon.virt.eventloop import register_event_impl

    register_event_impl()
    prefix = f"bench-ev-{os.getpid()}"
    with short_tmp() as tmp:
        cfg = daemon_config(tmp, URI, 15.0)
        async with running_daemon(cfg) as daemon:
            me = [sys.executable, "-m", "bench.bench_events"]
            sub = await asyncio.create_subprocess_exec(
                *me, "--role", "subscribe", "--socket", str(daemon.control_socket),
                "--prefix", prefix, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert sub.stdin is not None and sub.stdout is not None
            ready = await asyncio.wait_for(sub.stdout.readline(), 30)
            assert ready.strip() == b"ready", ready
            meter = LagMeter()
            cpu = time.process_time()
            async with meter.running():
                gen = await asyncio.create_subprocess_exec(
                    *me, "--role", "generate", "--prefix", prefix, "--threads", str(threads),
                    "--seconds", str(seconds), "--rate", str(rate), stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await gen.communicate()
                generated = json.loads(out.decode().strip().splitlines()[-1])
                sub.stdin.write(f"{generated['expected']}\n".encode())
                await sub.stdin.drain()
                out, _ = await sub.communicate()
            cpu = time.process_time() - cpu
            received = json.loads(out.decode().strip().splitlines()[-1])
            dropped = dict(daemon.bus.dropped)
    span = (received["last_arrival"] - received["first_event_time"]
            if received["first_event_time"] else 0.0)
    generated_span = generated["ended"] - generated["started"]
    return {
        "uri": URI,
        "threads": threads,
        "seconds": seconds,
        "rate": rate,
        "expected": generated["expected"],
        "received": received["received"],
        "lost": generated["expected"] - received["received"],
        "generated_per_second": round(generated["expected"] / generated_span, 1),
        "events_per_second": round(received["received"] / span, 1) if span else 0.0,
        "latency_p50_ms": received["latency_p50_ms"],
        "latency_p99_ms": received["latency_p99_ms"],
        "latency_max_ms": received["latency_max_ms"],
        "bus_dropped": dropped,
        "stream_notices": received["notices"],
        "generator_errors": generated["errors"],
        "daemon_cpu_s": round(cpu, 3),
        **rss_mib(),
        **meter.summary(),
    }


def main() -> None:
    """Parse the arguments and play one role; the default role prints the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("bench", "generate", "subscribe"), default="bench")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2500.0,
                        help="events per second the generator aims at (0: unpaced)")
    parser.add_argument("--prefix", default="bench-ev")
    parser.add_argument("--socket", default="")
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    if args.role == "generate":
        emit(generate(URI, args.prefix, args.threads, args.seconds, args.rate))
    elif args.role == "subscribe":
        emit(asyncio.run(subscribe(args.socket, args.prefix, args.settle)))
    else:
        quiet_logging()
        emit(asyncio.run(measure(args.threads, args.seconds, args.rate)))


if __name__ == "__main__":
    main()
