"""Sweep: how each cost grows with the number of domains, for virtmon, the peers and the bare call.

One run over test-driver domains reached through the lab's libvirtd (10 to 10,000, as
bench.bench_cycle does) and over lab KVM domains made here (1 to 20, as many as the host's memory
allows; added to those already made, all removed at the end, also on failure). At each size, each
repeat: the bare ``getAllDomainStats`` call, then virtmon, kumina's exporter
(prometheus-libvirt-exporter), collectd and the Python floor (bench/python_floor.py: the least an
exporter made of virtmon's libraries spends), one at a time, each started as in bench.bench_peers
and stopped again; once ready (samples for the first and last domain), it is left alone for an
interval and 1 ms per domain, so that its start-up work (virtmon's domain-cache resync) is over
before anything is measured. Per tool and point:

- scrape latency p50 / p99 with one scraper (Prometheus's headers; a bounded number of GETs,
  none started after a time budget);
- CPU per collection interval: CPU time of the tool's process tree (bench/cpu.py: a cgroup of
  its own where one can be made) over a window in which
  one scrape arrives per interval (what a Prometheus scraping at the tool's interval costs it),
  divided by the intervals; the exporter collects on each scrape, so its figure is a scrape's;
- RSS: the sum of the peaks (VmHWM) of the tool's processes;
- cycle time: virtmon's own ``virtmon_collection_duration_seconds``, the exporter's scrape
  (its collection), the bare call's wall time; collectd does not export its read time.

A point that outlasts ``--point-timeout`` is stopped and recorded as a timeout; the tool is not
run again in that scenario (its later repeats and larger sizes are recorded as skipped: its cost
grows with the domains, and each would wait out the timeout again). The results go to
bench/results/sweep.json, point by point as they come; ``python -m bench.sweep_plots`` turns them
into docs/perf-*.png and the sweep section of docs/PERFORMANCE.md.

    python -m bench.bench_sweep [--repeat 3] [--test-sizes 10 100 ...] [--kvm-sizes 1 5 10 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt

from bench import RESULTS_DIR, ROOT, machine, median, node_file_uri, process_tree
from bench.bench_cycle import floor_call, lab_domains
from bench.bench_peers import (
    TOOLS,
    IdleRates,
    Tool,
    fetch,
    running,
    scrapes_with_cost,
    wait_ready,
)
from bench.cpu import cpu_clock
from bench.sweep_plots import kvm_sizes_that_fit

RESULTS = RESULTS_DIR / "sweep.json"


def python_floor_command(_tmp: Path, port: int, interval: float, uri: str) -> list[str]:
    """bench/python_floor.py on ``uri`` with the stats groups of virtmon's default collectors."""
    from virtmon.collectors import DEFAULT_ENABLED, stats_flags_for

    return [sys.executable, str(ROOT / "bench" / "python_floor.py"), uri, str(port),
            str(interval), str(stats_flags_for(DEFAULT_ENABLED))]


PYTHON_FLOOR = Tool("python_floor", "Python floor", python_floor_command, sys.executable, False)
# The peers of `make bench`, then the floor.
SWEEP_TOOLS = (*TOOLS, PYTHON_FLOOR)
# The run's settings, recorded with its results: option, type, default, help.
SETTINGS: tuple[tuple[str, type, Any, str], ...] = (
    ("--repeat", int, 3, "repeats of each point"),
    ("--test-sizes", int, [10, 100, 1000, 5000, 10000], "numbers of test-driver domains"),
    ("--kvm-sizes", int, [1, 5, 10, 20], "numbers of lab KVM domains, as far as memory allows"),
    ("--interval", float, 5.0, "virtmon's and collectd's collection interval"),
    ("--intervals", int, 2, "intervals (one scrape each) in the CPU window"),
    ("--requests", int, 20, "GETs for the scrape latency, one scraper"),
    ("--pause", float, 0.05, "seconds between those GETs"),
    ("--scrape-budget", float, 10.0, "seconds after which no latency GET starts"),
    ("--bare-calls", int, 5, "bare calls per point and repeat"),
    ("--point-timeout", float, 240.0, "seconds one tool may take at one point"),
)
CYCLE_FAMILY = b"virtmon_collection_duration_seconds "


def peak_rss_mib(pid: int) -> float:
    """The sum of the peak RSS (VmHWM) of ``pid`` and its descendants, in MiB."""
    total = 0.0
    for each in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
    return round(total, 1)


def cycle_seconds(body: bytes) -> float | None:
    """virtmon's last cycle duration from its own exposition (None if absent)."""
    for line in body.splitlines():
        if line.startswith(CYCLE_FAMILY):
            return float(line.split()[1])
    return None


def settle_seconds(interval: float, domains: int) -> float:
    """Time after a tool is ready before its CPU window: an interval, and 1 ms per domain."""
    return interval + domains / 1000


async def measure_tool(tool: Tool, uri: str, probe_names: list[str], domains: int,
                       args: argparse.Namespace) -> dict[str, Any]:
    """One tool at one point: ready, a window of one scrape per interval, a latency burst."""
    from tests.lab import lab

    daemon_pid = lab.libvirtd_pid() or 0
    async with running(tool, args.interval, uri) as (pid, url):
        ready = await wait_ready(url, probe_names, pid, args.point_timeout)
        # Start-up work (virtmon's domain-cache resync, reading every domain's XML) is not a
        # collection interval's cost: it ends before the window.
        await asyncio.sleep(settle_seconds(args.interval, domains))
        # No idle rate subtracted: the window's CPU is the cost asked for (collection + scrape).
        nothing = IdleRates(0.0, 0.0)
        window = await scrapes_with_cost(url, pid, daemon_pid, nothing, 1, args.intervals,
                                         args.interval)
        done = max(1, window["requests"])
        burst = await scrapes_with_cost(url, pid, daemon_pid, nothing, 1, args.requests,
                                        args.pause, args.scrape_budget)
        cycle: float | None = None
        if tool.name == "virtmon":
            _status, body = await fetch(url, 60)
            cycle = cycle_seconds(body)
            cycle = None if cycle is None else cycle * 1e3
        elif tool.per_scrape_libvirt:
            cycle = burst["p50_ms"]
        return {
            "status": "ok",
            "ready_s": round(ready, 2),
            "scrapes": burst["requests"],
            "scrape_p50_ms": burst["p50_ms"],
            "scrape_p99_ms": burst["p99_ms"],
            # Per interval with one scrape in it: the window's CPU over its scrapes (one each).
            "cpu_per_interval_ms": round(window["cpu_per_scrape_ms"], 2),
            "libvirtd_cpu_per_interval_ms": round(window["libvirtd_cpu_per_scrape_ms"], 2),
            "window_scrapes": done,
            "rss_peak_mib": peak_rss_mib(pid),
            "cycle_ms": None if cycle is None else round(cycle, 3),
        }


async def measure_bare(uri: str, calls: int) -> dict[str, Any]:
    """The bare bulk call with the groups virtmon's default collectors ask for: median wall."""
    from virtmon.collectors import DEFAULT_ENABLED, stats_flags_for

    flags = stats_flags_for(DEFAULT_ENABLED)
    conn = await asyncio.to_thread(libvirt.openReadOnly, uri)
    try:
        runs = [await asyncio.to_thread(floor_call, conn, flags) for _ in range(calls)]
    finally:
        await asyncio.to_thread(conn.close)
    return {"status": "ok", "cycle_ms": round(median([wall for wall, _, _ in runs]) * 1e3, 3),
            "client_cpu_ms": round(median([cpu for _, cpu, _ in runs]) * 1e3, 3),
            "records": runs[-1][2]}


class Recorder:
    """The results file, rewritten after every point so that an interrupted run keeps them."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"machine": machine(), "settings": settings, "points": []}
        self.started = time.monotonic()

    def add(self, point: dict[str, Any]) -> None:
        """Record one point and save."""
        self.data["points"].append(point)
        self.save()

    def save(self, finished: bool = False) -> None:
        """Write the file (with the closing conditions when the run has ended)."""
        if finished:
            self.data["machine"]["load_average_after"] = " ".join(
                f"{x:.2f}" for x in os.getloadavg())
        self.data["wall_s"] = round(time.monotonic() - self.started, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")


def host_domains(uri: str) -> int:
    """How many domains the tools see on ``uri`` (on the lab host: everyone's)."""
    conn = libvirt.openReadOnly(uri)
    try:
        return len(conn.listAllDomains(0))
    finally:
        conn.close()


async def measure_point(scenario: str, domains: int, uri: str, probe_names: list[str],
                        args: argparse.Namespace, record: Recorder,
                        timed_out: dict[tuple[str, str], int]) -> None:
    """Every repeat of one size: the bare call, then each tool in turn, each bounded in time.

    ``timed_out`` holds, per (scenario, tool), the size at which the tool timed out; such a tool
    is recorded as skipped from then on in that scenario, and one that times out here is added.
    """
    seen = await asyncio.to_thread(host_domains, uri)
    for repeat in range(args.repeat):
        base = {"scenario": scenario, "domains": domains, "host_domains": seen,
                "repeat": repeat, "load_average": round(os.getloadavg()[0], 2)}
        print(f"bench: sweep {scenario} {domains} #{repeat + 1}: bare", file=sys.stderr,
              flush=True)
        record.add(base | {"tool": "bare"} | await measure_bare(uri, args.bare_calls))
        for tool in SWEEP_TOOLS:
            if args.only and tool.name not in args.only:
                continue
            print(f"bench: sweep {scenario} {domains} #{repeat + 1}: {tool.name}",
                  file=sys.stderr, flush=True)
            started = time.monotonic()
            outcome: dict[str, Any]
            if (scenario, tool.name) in timed_out:
                outcome = {"status": "skipped",
                           "timed_out_at": timed_out[(scenario, tool.name)]}
            elif shutil.which(tool.binary) is None:
                outcome = {"status": "error", "error": f"{tool.binary} is not installed"}
            else:
                try:
                    outcome = await asyncio.wait_for(
                        measure_tool(tool, uri, probe_names, seen, args),
                        args.point_timeout)
                except TimeoutError:
                    outcome = {"status": "timeout", "timeout_s": args.point_timeout}
                    timed_out[(scenario, tool.name)] = domains
                except Exception as exc:  # one tool's failure is a result, not the run's end
                    outcome = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
            outcome["wall_s"] = round(time.monotonic() - started, 1)
            record.add(base | {"tool": tool.name} | outcome)


@contextlib.contextmanager
def growing_lab_domains() -> Iterator[Any]:
    """``grow(n)``: make lab KVM domains until ``n`` exist (all removed on leaving)."""
    made: list[str] = []
    with contextlib.ExitStack() as stack:

        def grow(total: int) -> list[str]:
            if total > len(made):
                made.extend(stack.enter_context(lab_domains(total - len(made), len(made))))
            return list(made)

        yield grow


async def sweep(args: argparse.Namespace) -> None:
    """Test-driver sizes, then KVM sizes that fit, each point recorded as it ends."""
    from tests.lab import lab

    settings = {option[2:].replace("-", "_"): getattr(args, option[2:].replace("-", "_"))
                for option, *_ in SETTINGS}
    settings["cpu_clock"] = cpu_clock()
    record = Recorder(Path(args.output), settings)
    timed_out: dict[tuple[str, str], int] = {}
    try:
        for size in args.test_sizes:
            with node_file_uri(size) as uri:
                # The tools name test domains bench-00000 ...: the first and last prove all read.
                probe = [f"bench-{0:05d}", f"bench-{size - 1:05d}"]
                await measure_point("test", size, uri, probe, args, record, timed_out)
        fitting = kvm_sizes_that_fit(args.kvm_sizes, available_mib())
        record.data["settings"]["kvm_sizes_run"] = fitting
        with growing_lab_domains() as grow:
            for size in fitting:
                names = await asyncio.to_thread(grow, size)
                await measure_point("kvm", size, lab.URI, [names[0], names[-1]], args, record,
                                    timed_out)
    finally:
        record.save(finished=True)


def available_mib() -> float:
    """MemAvailable from /proc/meminfo, in MiB."""
    for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def main_async(args: argparse.Namespace) -> None:
    """The sweep, cancelled (so that every domain made is removed) on SIGTERM or SIGINT."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    await sweep(args)


def main() -> None:
    """Parse the arguments and run the sweep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for option, kind, default, text in SETTINGS:
        parser.add_argument(option, type=kind, default=default, help=text,
                            nargs="*" if isinstance(default, list) else None)
    parser.add_argument("--only", nargs="*", default=[], help="tools to measure (default all)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main_async(args))
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
