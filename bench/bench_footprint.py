"""Footprint benchmark: the memory of ``virtmon run`` and its admin helper, as a service runs them.

``virtmon run`` (a process of its own, default configuration, admin collector on) collects every
``--interval`` seconds; a Prometheus-like client scrapes it (OpenMetrics, gzip) once per interval.
The process tree's memory is sampled every 0.25 s from /proc: RSS, PSS and USS
(:func:`bench.process_memory` says which counts what), now and at their peaks, for the tree and
each process. ``--env NAME=VALUE`` adds to the daemon's environment (``MALLOC_ARENA_MAX=2``).

    python -m bench.bench_footprint --scenario kvm [--domains 10]    # lab KVM domains, made here
    python -m bench.bench_footprint --scenario test --domains 1000   # test driver via libvirtd
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt

from bench import ROOT, MemorySampler, emit, node_file_uri
from bench.bench_cycle import lab_domains
from bench.bench_peers import TOOLS, Tool, fetch, running, virtmon_command, wait_ready


@contextlib.contextmanager
def domains(scenario: str, count: int) -> Iterator[tuple[str, list[str]]]:
    """(URI, names of some of its domains) for the scenario: lab KVM or the test driver."""
    if scenario == "kvm":
        from tests.lab import lab

        with lab_domains(count) as names:
            yield lab.URI, names
    else:
        with node_file_uri(count) as uri:
            yield uri, ["bench-00000", f"bench-{count - 1:05d}"]


def threads(pid: int) -> int:
    """The number of threads of ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the daemon on the scenario's domains, scrape it each interval, sample its memory."""
    env = dict(item.split("=", 1) for item in args.env)
    with domains(args.scenario, args.domains) as (uri, names):
        label = TOOLS[0].label
        tool = Tool("virtmon", label, lambda tmp, port, interval, uri: virtmon_command(
            tmp, port, interval, uri, args.checkout), TOOLS[0].binary, False)
        async with running(tool, args.interval, uri, env) as (pid, url):
            ready = await wait_ready(url, names, pid, limit_s=180)
            memory = MemorySampler(pid, 0.25)
            async with memory.running():
                for _ in range(args.cycles):
                    await asyncio.sleep(args.interval)
                    status, body = await fetch(url, 30)
                    assert status == 200, status
            result = {"scenario": args.scenario, "domains": args.domains, "uri": uri,
                      "interval_s": args.interval, "cycles": args.cycles, "env": env,
                      "ready_s": round(ready, 2), "exposition_bytes": len(body),
                      "threads": threads(pid), **memory.summary()}
    return result


def main() -> None:
    """Parse the arguments, measure, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("kvm", "test"), default="test")
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--cycles", type=int, default=6, help="intervals measured (each scraped)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="the virtmon source tree to run (default this one)")
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    emit(asyncio.run(measure(args)))


if __name__ == "__main__":
    main()
