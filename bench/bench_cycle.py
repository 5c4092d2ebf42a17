"""Cycle benchmark: virtmon's whole collection cycle against the bare getAllDomainStats call.

The floor is ``getAllDomainStats(groups, NOWAIT)`` with exactly the groups virtmon's default
collectors ask for, on a read-only connection of its own, timed inside its worker thread. virtmon's
cycle is :meth:`Scheduler.cycle` on a running :class:`Daemon` (bulk call, node statistics, host
interfaces, admin helper, collectors, render), timed from the loop. The two alternate in the same
run, so both see the same domains and the same load. Also: CPU seconds per cycle
(``time.process_time``, every thread of the process), RSS, samples exported, and the loop's lag
while the cycles run. A cycle renders nothing: the first scrape of each form does, so after each
cycle one scrape's worth (OpenMetrics, gzip: what Prometheus asks for) is served and its CPU
counted too, for the end-to-end CPU per exported sample (libvirt result to bytes served once).

Scenarios (one process each):

    python -m bench.bench_cycle --scenario kvm [--domains 10]    # lab KVM domains, created here
    python -m bench.bench_cycle --scenario test --domains 1000   # test driver through libvirtd
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import libvirt

from bench import (
    LagMeter,
    daemon_config,
    emit,
    median,
    node_file_uri,
    percentile,
    quiet_logging,
    rss_mib,
    running_daemon,
    short_tmp,
)
from virtmon.exposition.cache import Variant

NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
# The form a Prometheus server asks for.
SCRAPED = Variant(openmetrics=True, gzipped=True)
# The benchmark runs the cycles itself: the daemon's own tick must not fire during the run.
IDLE_INTERVAL = 3600.0


def floor_call(conn: Any, flags: int) -> tuple[float, float, int]:
    """One bare bulk call in this thread: (wall s, process CPU s, records)."""
    cpu = time.process_time()
    start = time.perf_counter()
    records = conn.getAllDomainStats(flags, NOWAIT)
    return time.perf_counter() - start, time.process_time() - cpu, len(records)


@contextlib.contextmanager
def lab_domains(count: int, first: int = 0) -> Iterator[list[str]]:
    """``count`` running no-OS KVM domains made by the lab, removed afterwards.

    Numbered from ``first``, so that nested uses add domains to those an outer one made.
    """
    from tests.lab import lab

    names = [f"bench-{os.getpid()}-{i}" for i in range(first, first + count)]

    def make(name: str) -> None:
        conn = libvirt.open(lab.URI)
        try:
            lab.create_domain(conn, name)
        finally:
            conn.close()

    def remove(name: str) -> None:
        conn = libvirt.open(lab.URI)
        try:
            lab.remove_domain(conn, name)
        finally:
            conn.close()

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(make, names))
        yield names
    finally:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(remove, names))


async def measure(uri: str, repeat: int, warmup: int) -> dict[str, Any]:
    """Start a daemon on ``uri``, then alternate floor calls and virtmon cycles."""
    with short_tmp() as tmp:
        cfg = daemon_config(tmp, uri, IDLE_INTERVAL)
        started = time.perf_counter()
        async with running_daemon(cfg) as daemon:
            startup = time.perf_counter() - started
            scheduler = daemon.scheduler
            flags = scheduler.stats_flags
            # The domain cache reads every domain's XML once at start (its resync); wait for it,
            # or the first cycles queue behind it on the shared connection.
            resync_started = time.perf_counter()
            while len(daemon.domain_cache.info) < len(daemon.inventory):
                if time.perf_counter() - resync_started > 120:
                    break
                await asyncio.sleep(0.05)
            resync = time.perf_counter() - resync_started
            conn = await asyncio.to_thread(libvirt.openReadOnly, uri)
            floors: list[float] = []
            floor_cpus: list[float] = []
            cycles: list[float] = []
            cycle_cpus: list[float] = []
            serves: list[float] = []
            serve_cpus: list[float] = []
            records = 0
            meter = LagMeter()
            try:
                async with meter.running():
                    for i in range(warmup + repeat):
                        order = ("floor", "cycle") if i % 2 == 0 else ("cycle", "floor")
                        for step in order:
                            if step == "floor":
                                wall, cpu, records = await asyncio.to_thread(
                                    floor_call, conn, flags
                                )
                                if i >= warmup:
                                    floors.append(wall)
                                    floor_cpus.append(cpu)
                            else:
                                cpu0 = time.process_time()
                                t0 = time.perf_counter()
                                await scheduler.cycle()
                                wall = time.perf_counter() - t0
                                cpu1 = time.process_time()
                                t1 = time.perf_counter()
                                await scheduler.exposition.serve(SCRAPED)
                                if i >= warmup:
                                    cycles.append(wall)
                                    cycle_cpus.append(cpu1 - cpu0)
                                    serves.append(time.perf_counter() - t1)
                                    serve_cpus.append(time.process_time() - cpu1)
            finally:
                await asyncio.to_thread(conn.close)
            snapshot = scheduler.snapshot
            result = {
                "uri": uri,
                "groups": sorted(scheduler.requested_groups),
                "stats_flags": flags,
                "domains": len(snapshot.domains) if snapshot else 0,
                "floor_records": records,
                "repeat": repeat,
                "daemon_start_s": round(startup, 3),
                "domain_cache_resync_s": round(resync, 3),
                "floor_median_ms": round(median(floors) * 1e3, 3),
                "floor_p90_ms": round(percentile(floors, 0.9) * 1e3, 3),
                "floor_cpu_median_ms": round(median(floor_cpus) * 1e3, 3),
                "cycle_median_ms": round(median(cycles) * 1e3, 3),
                "cycle_p90_ms": round(percentile(cycles, 0.9) * 1e3, 3),
                "cycle_cpu_median_s": round(median(cycle_cpus), 4),
                "ratio": round(median(cycles) / median(floors), 3) if floors else None,
                "first_serve_median_ms": round(median(serves) * 1e3, 3),
                "first_serve_cpu_median_ms": round(median(serve_cpus) * 1e3, 3),
                "ratio_with_first_serve": (round((median(cycles) + median(serves))
                                                 / median(floors), 3) if floors else None),
                "cpu_per_sample_us": round((median(cycle_cpus) + median(serve_cpus))
                                           / max(1, scheduler.exposition.samples) * 1e6, 3),
                "samples": scheduler.exposition.samples,
                "text_bytes": len(scheduler.exposition.text),
                **rss_mib(),
                **meter.summary(),
            }
    return result


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen scenario."""
    from virtmon.virt.eventloop import register_event_impl

    register_event_impl()  # before the first open in this process
    if args.scenario == "kvm":
        from tests.lab import lab

        domains = args.domains or 10
        created = time.perf_counter()
        with lab_domains(domains) as names:
            made = time.perf_counter() - created
            result = await measure(lab.URI, args.repeat, args.warmup)
        result["created_domains"] = len(names)
        result["create_s"] = round(made, 1)
        return result
    with node_file_uri(args.domains or 1000) as uri:
        return await measure(uri, args.repeat, args.warmup)


def main() -> None:
    """Parse the arguments, run one scenario, print its JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("kvm", "test"), default="test")
    parser.add_argument("--domains", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    quiet_logging()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    emit(asyncio.run(scenario(args)))


if __name__ == "__main__":
    main()
