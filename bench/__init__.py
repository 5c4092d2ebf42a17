"""virtmon's benchmarks (not tests): ``python -m bench`` runs them all against the lab.

Each benchmark module runs its scenario in a subprocess of its own (libvirt accepts one event
implementation per process, and each scenario's RSS is then its own), prints its result as one
JSON line on stdout, and logs to stderr. This module holds what they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))])


def median(values: Sequence[float]) -> float:
    """The median (0 for no values)."""
    return percentile(values, 0.5)


def rss_mib(pid: int | str = "self") -> dict[str, float]:
    """Resident set size now and its peak (VmHWM), in MiB, from /proc."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mib": round(fields.get("VmRSS", 0.0), 1),
            "rss_peak_mib": round(fields.get("VmHWM", 0.0), 1)}


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    import libvirt

    def version(number: int) -> str:
        return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"

    try:
        cpu_model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu_model = platform.processor()
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines()
        if line.startswith("MemTotal")
    )
    daemon = subprocess.run(["libvirtd", "--version"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return {
        "uname": subprocess.run(["uname", "-a"], capture_output=True, text=True,
                                check=False).stdout.strip(),
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "libvirt_library": version(libvirt.getVersion()),
        "libvirtd": daemon,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # Other engineers' tests share the lab: the load says how quiet the machine was.
        "load_average_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (virtmon runs an admin helper; what it costs counts too)."""
    from tests.procfs import child_pids

    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(child_pids(current))
    return found


def process_memory(pid: int) -> dict[str, float]:
    """One process's memory in MiB: RSS, PSS and USS now (smaps_rollup), and its RSS peak.

    RSS counts every resident page the process maps, also those it shares with others: summed
    over processes that load the same libraries (the daemon, its helper, libvirtd), it counts
    them more than once. PSS divides each page by the number of processes mapping it, so a sum
    of PSS is what the processes cost together; USS is the pages no other process maps, what
    ending the process would give back.
    """
    rollup: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        rollup[key] = int(value.split()[0])
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "VmHWM":
            peak = int(value.split()[0])
    return {"rss_mib": rollup["Rss"] / 1024, "pss_mib": rollup["Pss"] / 1024,
            "uss_mib": (rollup["Private_Clean"] + rollup["Private_Dirty"]) / 1024,
            "rss_peak_mib": peak / 1024}


def tree_memory(pid: int) -> dict[str, Any]:
    """:func:`process_memory` summed over ``pid`` and its descendants, and of each process.

    The tree's ``rss_peak_mib`` sums each process's own peak: an upper bound of the tree's,
    since the peaks need not fall at the same moment.
    """
    each: dict[int, dict[str, float]] = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError, KeyError):  # a process that ended meanwhile
            each[member] = process_memory(member)
    total = {key: round(sum(m[key] for m in each.values()), 1)
             for key in ("rss_mib", "pss_mib", "uss_mib", "rss_peak_mib")}
    return {**total, "processes": {str(member): {key: round(value, 1) for key, value in m.items()}
                                   for member, m in each.items()}}


class MemorySampler:
    """The largest tree sums of :func:`tree_memory` seen while it runs (PSS and USS have no peak
    kept by the kernel, unlike RSS): a task that samples every ``period`` seconds."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        self.pid = pid
        self.period = period
        self.peaks = {"rss_mib": 0.0, "pss_mib": 0.0, "uss_mib": 0.0}
        self.samples = 0

    def sample(self) -> dict[str, Any]:
        """Sample once now (also from outside the task); the sample."""
        now = tree_memory(self.pid)
        self.samples += 1
        for key, peak in self.peaks.items():
            self.peaks[key] = max(peak, now[key])
        return now

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self.period)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[MemorySampler]:
        """Sample for the body of an ``async with``."""
        task = asyncio.ensure_future(self._run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def summary(self) -> dict[str, Any]:
        """The tree now (RSS, PSS, USS, summed RSS peaks, each process) and the sampled peaks."""
        return {**self.sample(), "sampled_peak": {key: round(value, 1)
                                                  for key, value in self.peaks.items()},
                "memory_samples": self.samples}


class LagMeter:
    """Measures the event loop's lag: a task that sleeps ``tick`` and records how late it wakes."""

    def __init__(self, tick: float = 0.005) -> None:
        self.tick = tick
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.tick
            await asyncio.sleep(self.tick)
            self.lags.append(max(0.0, loop.time() - due))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LagMeter]:
        """Measure for the body of an ``async with``."""
        self._task = asyncio.ensure_future(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self, prefix: str = "loop_lag") -> dict[str, float]:
        """p50, p99 and max lag in ms, and the number of samples."""
        return {
            f"{prefix}_samples": len(self.lags),
            f"{prefix}_p50_ms": round(percentile(self.lags, 0.5) * 1e3, 3),
            f"{prefix}_p99_ms": round(percentile(self.lags, 0.99) * 1e3, 3),
            f"{prefix}_max_ms": round(max(self.lags, default=0.0) * 1e3, 3),
        }


def daemon_config(state: Path, uri: str, interval: float, **sections: dict[str, Any]) -> Any:
    """A benchmark daemon's configuration: the tests' one, quieter, on ``uri``."""
    from tests.daemon import daemon_config as test_daemon_config

    merged: dict[str, dict[str, Any]] = {"libvirt": {"uri": uri}, "collect": {"interval": interval},
                                         "log": {"level": "warning"}}
    for section, values in sections.items():
        merged.setdefault(section, {}).update(values)
    return test_daemon_config(state, **merged)


@contextlib.asynccontextmanager
async def running_daemon(cfg: Any) -> AsyncIterator[Any]:
    """The tests' running daemon, with room for thousands of domains to start and stop."""
    from tests.daemon import running_daemon as test_running_daemon

    async with test_running_daemon(cfg, start_timeout=120.0, stop_timeout=60.0) as daemon:
        yield daemon


@contextlib.contextmanager
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path (AF_UNIX socket paths are limited)."""
    with tempfile.TemporaryDirectory(prefix="vmb-", dir="/tmp") as tmp:
        yield Path(tmp)


def quiet_logging() -> None:
    """virtmon's structlog and stdlib logging at warning level, on stderr (stdout is the result)."""
    from virtmon.logsetup import configure

    configure("warning", "json", sys.stderr)


def emit(result: dict[str, Any]) -> None:
    """Print a scenario's result as the last line of stdout."""
    print(json.dumps(result), flush=True)


def run_scenario(module: str, args: Sequence[str], timeout: float,
                 attempts: int = 2) -> dict[str, Any]:
    """Run ``python -m module args`` and return its JSON result; by default again once on failure.

    Once: other engineers' tests may restart libvirtd under a running benchmark.
    """
    command = [sys.executable, "-m", module, *args]
    error = ""
    for _attempt in range(attempts):
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines:
            result: dict[str, Any] = json.loads(lines[-1])
            return result
        error = proc.stderr[-3000:]
        print(f"bench: {module} {' '.join(args)} failed ({proc.returncode}); stderr:\n{error}",
              file=sys.stderr)
    raise RuntimeError(f"{module} {' '.join(args)} failed twice:\n{error}")


def node_xml(domains: int, prefix: str = "bench") -> str:
    """A test driver node file with ``domains`` running ``<domain type='test'>``."""
    parts = ["<node>"]
    for i in range(domains):
        parts.append(
            f"<domain type='test'><name>{prefix}-{i:05d}</name>"
            f"<uuid>00000000-0000-4000-8000-{i:012d}</uuid>"
            "<memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"
        )
    parts.append("</node>")
    return "\n".join(parts)


@contextlib.contextmanager
def node_file_uri(domains: int) -> Iterator[str]:
    """``test+unix:///ABS/PATH.xml`` for a temporary node file with ``domains`` test domains."""
    with tempfile.TemporaryDirectory(prefix="virtmon-bench-") as tmp:
        path = Path(tmp) / f"node-{domains}.xml"
        path.write_text(node_xml(domains), encoding="utf-8")
        os.chmod(tmp, 0o755)
        yield f"test+unix://{path}"


def minimal_domain_xml(name: str) -> str:
    """The smallest test driver domain, named ``name``."""
    return (f"<domain type='test'><name>{name}</name><memory>8192</memory>"
            "<os><type>hvm</type></os></domain>")


class Pacer:
    """One load thread's pace: each :meth:`wait` sleeps until the next due time, ``period``
    after the last (the first ``offset`` from now, to spread the threads); 0 never sleeps."""

    def __init__(self, period: float, offset: float = 0.0) -> None:
        self.period = period
        self.due = time.monotonic() + offset

    def wait(self) -> None:
        pause = self.due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self.due += self.period


def run_load_threads(uri: str, threads: int, seconds: float,
                     work: Callable[[Any, int, threading.Event], None]) -> None:
    """Run ``work(conn, index, stop)`` in ``threads`` threads, each with a libvirt connection of
    its own to ``uri`` (closed after); set ``stop`` after ``seconds`` and wait for them."""
    import libvirt

    stop = threading.Event()

    def run(index: int) -> None:
        conn = libvirt.open(uri)
        try:
            work(conn, index, stop)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join(60)
