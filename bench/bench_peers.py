"""Peers benchmark: virtmon, Debian's prometheus-libvirt-exporter and collectd's virt plugin.

All three run as daemons of their own on loopback against the lab's libvirtd (``qemu:///system``)
while the same lab KVM domains (created here, removed after) are defined, one tool at a time, each
from a temporary configuration:

- ``virtmon run`` with a collection cycle every ``--interval`` seconds;
- ``prometheus-libvirt-exporter`` (kumina's libvirt_exporter 0.2): it calls libvirt on every
  scrape (per-domain calls), nothing between scrapes;
- ``collectd`` with the ``virt`` plugin (same interval) and ``write_prometheus``, which serves the
  values of the last read.

For each: scrape latency p50/p99 with 1 and 16 concurrent scrapers (a bounded number of GETs, with
Prometheus's headers, from a child process), CPU per scrape and per interval (the tool's process
tree, from a cgroup of its own where one can be made, bench/cpu.py; libvirtd's from
/proc/PID/stat, which the lab's other users also load), RSS, samples exported (in total and
for the lab domains made here), and its behaviour while libvirtd is stopped with SIGSTOP for
10 s: a scrape started 1 s into the stop, with a 15 s client timeout — does it hang, for how
long, and what it returns.

**SIGSTOP of libvirtd affects everyone on this machine**: exactly one 10 s window per tool, SIGCONT
in a ``finally``; each window is announced on stderr and recorded in the result.

    python -m bench.bench_peers [--domains 10] [--interval 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from bench import ROOT, MemorySampler, emit, process_tree, short_tmp
from bench.bench_cycle import lab_domains
from bench.bench_scrape import PROMETHEUS_HEADERS, client
from bench.cpu import CpuGroup, cpu_clock, cpu_group
from tests.daemon import free_port
from tests.installed import runtime_command, runtime_view

CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_SECONDS = 10.0
PROBE_AFTER = 1.0
PROBE_TIMEOUT = 15.0


# -- /proc ---------------------------------------------------------------------------------------


# The cgroup each running tool was started in, by its pid (bench/cpu.py).
CPU_GROUPS: dict[int, CpuGroup] = {}


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its descendants, in seconds: from the cgroup it was started in
    (microseconds), else utime + stime from /proc/PID/stat (10 ms ticks)."""
    group = CPU_GROUPS.get(pid)
    if group is not None:
        return group.seconds()
    total = 0
    for each in process_tree(pid):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{each}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


# -- the tools -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """How to start one tool: its command line, made from a temp dir, a port and the interval."""

    name: str
    label: str
    # (command, ...) from (tmp, port, interval, libvirt URI); may write config files into tmp.
    command: Callable[[Path, int, float, str], list[str]]
    binary: str
    per_scrape_libvirt: bool  # calls libvirt on every scrape (no interval of its own)


def virtmon_command(tmp: Path, port: int, interval: float, uri: str = "qemu:///system",
                    checkout: Path = ROOT) -> list[str]:
    """``virtmon run`` with a temp TOML config (control socket in tmp, no socket group), as its
    package installs it: the checkout and its runtime dependencies only (tests.installed)."""
    config = tmp / "virtmon.toml"
    config.write_text(
        f'[libvirt]\nuri = "{uri}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        f'[control]\nsocket = "{tmp}/control.sock"\nsocket_group = ""\n'
        f'[state]\ndir = "{tmp}/state"\n'
        f"[collect]\ninterval = {interval}\n"
        f'[log]\nlevel = "warning"\nformat = "json"\n',
        encoding="utf-8",
    )
    command, env = runtime_command(runtime_view(tmp / "site"), "-m", "virtmon.cli", "run",
                                   "--config", str(config), checkout=checkout)
    return ["env", *(f"{name}={value}" for name, value in env.items()), *command]


def exporter_command(tmp: Path, port: int, interval: float, uri: str) -> list[str]:
    """Debian's prometheus-libvirt-exporter: flags only, no interval."""
    del tmp, interval
    return ["prometheus-libvirt-exporter", f"--web.listen-address=127.0.0.1:{port}",
            f"--libvirt.uri={uri}"]


def collectd_command(tmp: Path, port: int, interval: float, uri: str) -> list[str]:
    """collectd in the foreground: virt plugin every ``interval`` s, write_prometheus."""
    config = tmp / "collectd.conf"
    config.write_text(
        f'Interval {interval}\nBaseDir "{tmp}"\nPIDFile "{tmp}/collectd.pid"\n'
        'PluginDir "/usr/lib/collectd"\nTypesDB "/usr/share/collectd/types.db"\n'
        f'LoadPlugin logfile\n<Plugin logfile>\n  LogLevel warning\n  File "{tmp}/collectd.log"\n'
        "</Plugin>\n"
        f'LoadPlugin virt\n<Plugin virt>\n  Connection "{uri}"\n  RefreshInterval 60\n'
        "  HostnameFormat name\n</Plugin>\n"
        f'LoadPlugin write_prometheus\n<Plugin write_prometheus>\n  Host "127.0.0.1"\n'
        f'  Port "{port}"\n</Plugin>\n',
        encoding="utf-8",
    )
    return ["collectd", "-f", "-C", str(config)]


TOOLS = (
    Tool("virtmon", "virtmon", virtmon_command, str(ROOT / ".venv" / "bin" / "virtmon"), False),
    Tool("libvirt_exporter", "prometheus-libvirt-exporter 0.2", exporter_command,
         "prometheus-libvirt-exporter", True),
    Tool("collectd", "collectd 5.12 virt + write_prometheus", collectd_command, "collectd", False),
)


@contextlib.asynccontextmanager
async def running(tool: Tool, interval: float,
                  uri: str = "qemu:///system",
                  env: dict[str, str] | None = None) -> AsyncIterator[tuple[int, str]]:
    """Start ``tool`` on ``uri`` and a free loopback port (``env`` added to this process's
    environment); yield (pid, metrics URL); stop it by its pid."""
    group = cpu_group(tool.name)
    with short_tmp() as tmp:
        port = free_port()
        with (tmp / "stdio.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *tool.command(tmp, port, interval, uri), stdout=log, stderr=log, cwd=tmp,
                start_new_session=True, env={**os.environ, **(env or {})},
                preexec_fn=group.enter if group is not None else None,
            )
            if group is not None:
                CPU_GROUPS[proc.pid] = group
            try:
                yield proc.pid, f"http://127.0.0.1:{port}/metrics"
            finally:
                CPU_GROUPS.pop(proc.pid, None)
                with contextlib.suppress(ProcessLookupError):  # it may have exited by itself
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await asyncio.wait_for(proc.wait(), 10)
                if group is not None:
                    group.remove()
                if proc.returncode not in (0, -signal.SIGTERM):
                    tail = (tmp / "stdio.log").read_text(errors="replace")[-500:]
                    print(f"bench: {tool.name} exited {proc.returncode}: {tail}",
                          file=sys.stderr)


async def fetch(url: str, limit_s: float) -> tuple[int, bytes]:
    """One GET with Prometheus's headers, decompressed: (status, body)."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit_s)) as session, \
            session.get(url, headers=PROMETHEUS_HEADERS) as response:
        return response.status, await response.read()


def count_samples(body: bytes, names: list[str]) -> tuple[int, int]:
    """(all samples, samples about the given domains) in an exposition."""
    marks = [f'="{name}"'.encode() for name in names]
    total = mine = 0
    for line in body.splitlines():
        if not line or line.startswith(b"#"):
            continue
        total += 1
        if any(mark in line for mark in marks):
            mine += 1
    return total, mine


async def wait_ready(url: str, names: list[str], pid: int, limit_s: float = 90.0) -> float:
    """Seconds until a scrape shows samples for every one of ``names``."""
    started = time.monotonic()
    while (left := limit_s - (time.monotonic() - started)) > 0:
        with contextlib.suppress(Exception):
            # At thousands of domains one scrape of the exporter takes seconds.
            status, body = await fetch(url, max(10.0, left))
            text = body.decode(errors="replace")
            if status == 200 and all(f'="{name}"' in text for name in names):
                return time.monotonic() - started
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise RuntimeError(f"{url}: the tool exited before it was ready") from None
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{url}: no samples for the lab domains within {limit_s:.0f} s")


async def libvirtd_answers(limit_s: float = 60.0) -> float:
    """Seconds until a fresh connection to libvirtd answers (after a SIGCONT)."""
    from tests.lab import lab

    def call() -> None:
        conn = libvirt.openReadOnly(lab.URI)
        try:
            conn.getLibVersion()
        finally:
            conn.close()

    started = time.monotonic()
    await asyncio.wait_for(asyncio.to_thread(call), limit_s)
    return time.monotonic() - started


async def probe(url: str) -> dict[str, Any]:
    """A scrape with a 15 s client timeout: how long it took and what it returned."""
    started = time.monotonic()
    try:
        status, body = await fetch(url, PROBE_TIMEOUT)
        outcome = f"HTTP {status}"
        samples = count_samples(body, [])[0]
    except TimeoutError:
        outcome, samples = f"timed out ({PROBE_TIMEOUT:.0f} s)", 0
    except Exception as exc:
        outcome, samples = f"error: {type(exc).__name__}: {exc}"[:120], 0
    return {"seconds": round(time.monotonic() - started, 3), "outcome": outcome,
            "samples": samples}


async def stall(tool: Tool, url: str) -> dict[str, Any]:
    """libvirtd under SIGSTOP for exactly 10 s; a scrape started 1 s in; SIGCONT in a finally."""
    from tests.lab import lab

    pid = lab.libvirtd_pid()
    if pid is None:
        return {"error": "libvirtd is not running"}
    print(f"bench: NOTE libvirtd (pid {pid}) stopped with SIGSTOP for {STOP_SECONDS:.0f} s "
          f"({tool.name}); everyone on this machine sees it hang", file=sys.stderr, flush=True)
    stopped = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(PROBE_AFTER)
        during = asyncio.ensure_future(probe(url))
        # The whole window, whether the scrape returned or not.
        await asyncio.sleep(max(0.0, STOP_SECONDS - (time.monotonic() - stopped)))
    finally:
        os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
    result = await during
    finished_at = PROBE_AFTER + result["seconds"]
    result["hung"] = result["seconds"] > 1.0
    result["returned_after_sigcont"] = finished_at >= STOP_SECONDS - 0.05
    result["stopped_s"] = round(resumed - stopped, 3)
    result["libvirtd_pid"] = pid
    result["libvirtd_answers_after_s"] = round(await libvirtd_answers(), 3)
    result["after"] = await probe(url)
    return result


@dataclass(frozen=True)
class IdleRates:
    """CPU seconds per second of a tool's process tree and of libvirtd while nobody scrapes."""

    tool: float
    libvirtd: float


async def idle_rates(pid: int, daemon_pid: int, seconds: float) -> IdleRates:
    """No scrape for ``seconds``: what the tool costs by itself (its own cycles), and libvirtd."""
    cpu0, lcpu0, t0 = cpu_seconds(pid), cpu_seconds(daemon_pid), time.monotonic()
    await asyncio.sleep(seconds)
    span = time.monotonic() - t0
    return IdleRates((cpu_seconds(pid) - cpu0) / span, (cpu_seconds(daemon_pid) - lcpu0) / span)


async def scrapes_with_cost(url: str, pid: int, daemon_pid: int, idle: IdleRates,
                            concurrency: int, requests: int, pause: float,
                            budget_s: float | None = None) -> dict[str, Any]:
    """``client``'s latencies, plus the CPU per scrape of the tool and of libvirtd beyond idle."""
    cpu0, lcpu0, t0 = cpu_seconds(pid), cpu_seconds(daemon_pid), time.monotonic()
    run = await client(url, concurrency, requests, pause, budget_s)
    span = time.monotonic() - t0
    own = cpu_seconds(pid) - cpu0 - idle.tool * span
    theirs = cpu_seconds(daemon_pid) - lcpu0 - idle.libvirtd * span
    done = max(1, run["requests"])
    run["cpu_per_scrape_ms"] = round(max(0.0, own) / done * 1e3, 3)
    run["libvirtd_cpu_per_scrape_ms"] = round(max(0.0, theirs) / done * 1e3, 3)
    return run


async def measure_tool(tool: Tool, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One tool: readiness, idle CPU, scrapes at 1 and 16, samples, RSS, the SIGSTOP window."""
    from tests.lab import lab

    if shutil.which(tool.binary) is None:
        return {"error": f"{tool.binary} is not installed (make bench installs it)"}
    daemon_pid = lab.libvirtd_pid() or 0
    async with running(tool, args.interval) as (pid, url):
        ready = await wait_ready(url, names, pid)
        result: dict[str, Any] = {"tool": tool.label, "url": url, "ready_s": round(ready, 2),
                                  "interval_s": None if tool.per_scrape_libvirt else args.interval}
        # The memory from here to the SIGSTOP window: scrapes and cycles, peaks included.
        memory = MemorySampler(pid)
        async with memory.running():
            await client(url, 1, 5, 0.0)  # warm-up
            idle = await idle_rates(pid, daemon_pid, args.idle)
            result["cpu_per_s_idle_ms"] = round(idle.tool * 1e3, 3)
            result["cpu_per_interval_ms"] = (None if tool.per_scrape_libvirt
                                             else round(idle.tool * args.interval * 1e3, 2))
            for concurrency, requests in ((1, args.requests), (16, args.requests_16)):
                result[f"c{concurrency}"] = await scrapes_with_cost(
                    url, pid, daemon_pid, idle, concurrency, requests, args.pause)
            _status, body = await fetch(url, 60)
            result["samples"], mine = count_samples(body, names)
            result["samples_per_lab_domain"] = round(mine / len(names), 1)
            result["body_bytes"] = len(body)
        result.update(memory.summary())
        result["sigstop"] = await stall(tool, url)
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Create the lab domains, then measure each tool in turn on them."""
    from tests.lab import lab

    result: dict[str, Any] = {"domains": args.domains, "interval_s": args.interval,
                              "requests": args.requests, "requests_16": args.requests_16,
                              "cpu_clock": cpu_clock(), "sigstop_s": STOP_SECONDS,
                              "probe_after_s": PROBE_AFTER, "probe_timeout_s": PROBE_TIMEOUT,
                              "tools": {}}
    with lab_domains(args.domains) as names:
        conn = libvirt.openReadOnly(lab.URI)
        try:
            result["host_domains_running"] = len(conn.listAllDomains(
                libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
            result["host_domains"] = len(conn.listAllDomains(0))
        finally:
            conn.close()
        for tool in TOOLS:
            if args.only and tool.name not in args.only:
                continue
            print(f"bench: peers: {tool.name} ...", file=sys.stderr, flush=True)
            try:
                result["tools"][tool.name] = await measure_tool(tool, names, args)
            except Exception as exc:
                result["tools"][tool.name] = {"error": f"{type(exc).__name__}: {exc}"[-500:]}
    return result


# -- the figures for the table (python -m bench) ------------------------------------------------


def _stall_text(stop: dict[str, Any]) -> str:
    if "error" in stop:
        return f"not measured: {stop['error']}"
    took = stop["seconds"]
    if not stop["hung"]:
        return f"no hang: {stop['outcome']} in {took * 1e3:.0f} ms, {stop['samples']:,} samples"
    end = "returned after SIGCONT" if stop["returned_after_sigcont"] else "returned"
    return f"HUNG {took:.1f} s, {end}: {stop['outcome']}"


def memory_text(data: dict[str, Any]) -> str:
    """A process tree's RSS / PSS / USS now (a result of :class:`bench.MemorySampler`)."""
    return f"{data['rss_mib']:.0f} / {data['pss_mib']:.0f} / {data['uss_mib']:.0f} MiB"


def peak_text(data: dict[str, Any]) -> str:
    """Its peaks: the summed VmHWM of each process, the largest PSS and USS sampled."""
    peak = data["sampled_peak"]
    return f"{data['rss_peak_mib']:.0f} / {peak['pss_mib']:.0f} / {peak['uss_mib']:.0f} MiB"


def figures(data: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """(figure, {tool name: value}) for each compared figure; a failed tool gets its error."""
    interval = data["interval_s"]
    out: dict[str, dict[str, str]] = {}
    for tool in TOOLS:
        got = data["tools"].get(tool.name)
        if got is None:
            continue
        if "error" in got:
            out.setdefault("failed", {})[tool.name] = got["error"].splitlines()[-1][:100]
            continue

        def put(figure: str, value: str, name: str = tool.name) -> None:
            out.setdefault(figure, {})[name] = value

        for conc in (1, 16):
            run = got[f"c{conc}"]
            put(f"scrape p50 / p99, {conc} scraper{'s' if conc > 1 else ''}",
                f"{run['p50_ms']:.2f} / {run['p99_ms']:.2f} ms")
        for conc in (1, 16):
            run = got[f"c{conc}"]
            put(f"CPU per scrape, {conc} scraper{'s' if conc > 1 else ''}: tool / libvirtd",
                f"{run['cpu_per_scrape_ms']:.2f} / {run['libvirtd_cpu_per_scrape_ms']:.2f} ms")
        put(f"CPU per collection interval ({interval:.0f} s, no scrapes)",
            "no interval: libvirt is called on each scrape" if got["cpu_per_interval_ms"] is None
            else f"{got['cpu_per_interval_ms']:.1f} ms")
        per_15 = got["cpu_per_s_idle_ms"] * 15 + got["c1"]["cpu_per_scrape_ms"]
        put(f"tool CPU per 15 s: collecting every {interval:g} s, one scrape", f"{per_15:.1f} ms")
        put("process tree memory: RSS / PSS / USS", memory_text(got))
        put("… peaks: RSS (each process's, summed) / PSS / USS (sampled)", peak_text(got))
        put("samples exported: all / per lab domain",
            f"{got['samples']:,} / {got['samples_per_lab_domain']:g}")
        put("libvirtd SIGSTOP 10 s: scrape started 1 s in (15 s timeout)",
            _stall_text(got["sigstop"]))
        after = got["sigstop"].get("after")
        if after:
            put("first scrape after SIGCONT",
                f"{after['outcome']} in {after['seconds'] * 1e3:.0f} ms")
    return list(out.items())


def side_by_side(data: dict[str, Any]) -> str:
    """The peers as a Markdown table, one column per tool."""
    names = [t for t in TOOLS if t.name in data["tools"]]
    lines = ["| figure | " + " | ".join(t.label for t in names) + " |",
             "|---|" + "---|" * len(names)]
    for figure, values in figures(data):
        lines.append(f"| {figure} | " + " | ".join(values.get(t.name, "") for t in names) + " |")
    return "\n".join(lines)


def main() -> None:
    """Parse the arguments, measure, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=10)
    parser.add_argument("--interval", type=float, default=5.0,
                        help="virtmon's and collectd's collection interval")
    parser.add_argument("--idle", type=float, default=15.0,
                        help="seconds without scrapes to measure each tool's own CPU")
    parser.add_argument("--requests", type=int, default=60, help="GETs with 1 scraper")
    parser.add_argument("--requests-16", type=int, default=160, help="GETs with 16 scrapers")
    parser.add_argument("--pause", type=float, default=0.01)
    parser.add_argument("--only", nargs="*", default=[], help="tools to measure (default all)")
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    emit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
