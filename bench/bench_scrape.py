"""Scrape benchmark: GET /metrics latency with 1 and 16 concurrent scrapers, loopback only.

A virtmon Daemon runs in this process on N test-driver domains through libvirtd, first with no
cycle during the scrapes, then with a cycle every ``--interval`` seconds (some scrapes then meet a
running cycle). The scrapers run in a separate
process (aiohttp, a bounded number of requests each) with Prometheus's own headers (OpenMetrics
preferred, gzip), and time each request until its whole body has arrived (not decompressed).

    python -m bench.bench_scrape [--domains 1000] [--requests 800]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import libvirt

from bench import (
    daemon_config,
    emit,
    node_file_uri,
    percentile,
    quiet_logging,
    rss_mib,
    running_daemon,
    short_tmp,
)

PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


async def scrape(url: str, concurrency: int, requests: int, pause: float,
                 budget_s: float | None = None) -> dict[str, Any]:
    """``concurrency`` scrapers, ``requests`` GETs in total, ``pause`` s apart; latency in ms.

    With ``budget_s``, no GET starts after that many seconds (a slow exporter gets fewer).
    """
    import aiohttp

    latencies: list[float] = []
    sizes: set[int] = set()
    remaining = requests
    deadline = time.monotonic() + (budget_s if budget_s is not None else float("inf"))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def scraper() -> None:
            nonlocal remaining
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                start = time.perf_counter()
                async with session.get(url, headers=PROMETHEUS_HEADERS) as response:
                    body = await response.read()
                latencies.append(time.perf_counter() - start)
                assert response.status == 200, response.status
                sizes.add(len(body))
                await asyncio.sleep(pause)

        await asyncio.gather(*(scraper() for _ in range(concurrency)))
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
        "max_ms": round(max(latencies, default=0.0) * 1e3, 3),
        "body_bytes": max(sizes, default=0),
    }


async def client(url: str, concurrency: int, requests: int, pause: float,
                 budget_s: float | None = None) -> dict[str, Any]:
    """Run the scrapers in a child process (the daemon's loop then serves alone)."""
    budget = [] if budget_s is None else ["--budget", str(budget_s)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_scrape", "--role", "client", "--url", url,
        "--concurrency", str(concurrency), "--requests", str(requests), "--pause", str(pause),
        *budget, stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await proc.communicate()
    finally:
        # Cancelled (a caller's time limit): the scrapers must not outlive it.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def measure(domains: int, requests: int, interval: float, pause: float) -> dict[str, Any]:
    """A daemon on ``domains`` test domains, scraped with 1 then 16 concurrent scrapers.

    Twice: with no cycle running during the scrapes (the cost of a scrape alone), then with a
    cycle every ``interval`` seconds (scrapes that meet a cycle wait for the loop).
    """
    from virtmon.virt.eventloop import register_event_impl

    register_event_impl()
    result: dict[str, Any] = {"domains": domains, "interval_s": interval, "pause_s": pause}
    with node_file_uri(domains) as uri:
        for phase, every in (("idle", 3600.0), ("cycling", interval)):
            with short_tmp() as tmp:
                async with running_daemon(daemon_config(tmp, uri, every)) as daemon:
                    url = f"{daemon.metrics_address}/metrics"
                    await client(url, 1, 20, 0.0)  # warm-up
                    cycles = daemon.scheduler.stats.cycles
                    for concurrency in (1, 16):
                        run = await client(url, concurrency, requests, pause)
                        result[f"{phase}_c{concurrency}"] = run
                    result[f"{phase}_cycles_during"] = daemon.scheduler.stats.cycles - cycles
                    result["samples"] = daemon.scheduler.exposition.samples
                    result.update(rss_mib())
    return result


def main() -> None:
    """Parse the arguments and play one role; the default role prints the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("bench", "client"), default="bench")
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="collection interval: scrapes also meet running cycles")
    parser.add_argument("--pause", type=float, default=0.01,
                        help="each scraper's pause between its requests")
    parser.add_argument("--url", default="")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--budget", type=float, default=None,
                        help="client: start no GET after this many seconds")
    args = parser.parse_args()
    if args.role == "client":
        emit(asyncio.run(scrape(args.url, args.concurrency, args.requests, args.pause,
                                args.budget)))
        return
    quiet_logging()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    emit(asyncio.run(measure(args.domains, args.requests, args.interval, args.pause)))


if __name__ == "__main__":
    main()
