"""Soak benchmark: does the daemon stay flat under hours of churn and libvirtd restarts?

A virtmon Daemon runs in this process, collecting every second from a private libvirtd's test
driver (tests/lab/private_libvirtd.py: an unprivileged session libvirtd with its own
configuration, sockets, pid file and state under /tmp, never the lab's shared one). Around it:

- churn, a process per phase: worker threads put test domains through define, start, suspend,
  resume, destroy and undefine, paced to ``--rate`` operations per second in all;
- clients, one process for the whole run: a scrape of /metrics every second, control API clients
  (a new connection for each, status, domains, operations, then gone) and event stream followers
  that connect, read for a few seconds and disconnect, all the time; and one follower for the
  whole run that counts the churn's events and checks their sequence numbers;
- every ``--restart-every`` seconds the private libvirtd is restarted: the churn's phase ends
  first (its workers finish their domain's round, so none of its domains is left), libvirtd is
  stopped and started, and the next phase begins once the daemon is connected again.

Every ``--sample-every`` seconds this process samples itself, which is the daemon (the clients
and the churn run elsewhere): RSS, open file descriptors, threads, the libvirt connection and
domain objects alive in it (``virConnect`` and ``virDomain`` instances the garbage collector
tracks), the domain cache's and the inventory's size, the journal's and the outbox's rows and
the SQLite file's size.

Figures. Growth: the samples after the warm-up are cut in four quarters; growth is the median of
the last quarter against the median of the first, and "in the last half" the median of the last
quarter against that of the third; flat means ≤ 5 % and ≤ 1 % (the noise of a process's RSS).
The sample taken after the churn and the clients have ended is in the series, not in the growth.
The journal keeps events by design (its retention, pruned hourly) and grows with them: its rows
are reported as bytes per event and not held to flatness. Events lost: every operation the churn
completed is one lifecycle event libvirt sends to each connected client (defined, started,
suspended, resumed, stopped, undefined); lost = completed operations that the whole-run follower
never received as a live (non-synthetic) event, plus gaps in the sequence numbers it read. The
churn is paused while libvirtd restarts and until the daemon has reconnected, so no operation is
made that no connected client could hear of; what libvirtd forgets in a restart (the test
driver's state starts afresh) the daemon's reconnect reconciles with synthetic events, counted
separately. The whole time series goes to bench/results/soak-*.json and .csv.

    python -m bench.bench_soak [--minutes 10] [--rate 20] [--restart-every 150]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import json
import os
import random
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import libvirt

from bench import (
    RESULTS_DIR,
    ROOT,
    Pacer,
    daemon_config,
    emit,
    median,
    minimal_domain_xml,
    quiet_logging,
    run_load_threads,
    running_daemon,
    short_tmp,
)

# The operations of one domain's round, each answered by one lifecycle event of that name.
ROUND = (("define", "defined"), ("start", "started"), ("suspend", "suspended"),
         ("resume", "resumed"), ("destroy", "stopped"), ("undefine", "undefined"))
GROWTH_LIMIT_PCT = 5.0
LAST_HALF_LIMIT_PCT = 1.0


# -- the pure parts: growth and sequence gaps ---------------------------------------------------


def quarter_medians(values: Sequence[float]) -> list[float]:
    """The medians of the four consecutive quarters of ``values`` (at least four of them)."""
    if len(values) < 4:
        raise ValueError(f"{len(values)} samples: growth needs at least 4 after the warm-up")
    bounds = [round(i * len(values) / 4) for i in range(5)]
    return [median(values[bounds[i]:bounds[i + 1]]) for i in range(4)]


def percent_change(before: float, after: float) -> float:
    """``after`` against ``before`` in percent; 0 when both are 0, infinite from 0 to more."""
    if before == 0:
        return 0.0 if after == 0 else float("inf")
    return (after - before) / before * 100.0


def growth(values: Sequence[float]) -> dict[str, Any]:
    """Growth of a series sampled after the warm-up: last quarter's median against the first's,
    and against the third's (the last half); flat if within the limits."""
    q1, _q2, q3, q4 = quarter_medians(values)
    overall = percent_change(q1, q4)
    last_half = percent_change(q3, q4)
    return {"first_quarter": q1, "third_quarter": q3, "last_quarter": q4,
            "growth_pct": round(overall, 2), "last_half_growth_pct": round(last_half, 2),
            "flat": overall <= GROWTH_LIMIT_PCT and last_half <= LAST_HALF_LIMIT_PCT}


def sequence_gaps(seqs: Iterable[int], after: int) -> dict[str, int]:
    """Numbers missing from a stream that should count up by one from ``after`` + 1, and numbers
    that came again or went backwards."""
    missing = repeated = 0
    last = after
    for seq in seqs:
        if seq <= last:
            repeated += 1
            continue
        missing += seq - last - 1
        last = seq
    return {"missing": missing, "repeated": repeated}


def events_lost(expected: Counter[str], received: Counter[str]) -> int:
    """Expected events (by name) that were not received; extra ones do not make up for them."""
    return sum(max(0, count - received[name]) for name, count in expected.items())


# -- the churn (a process per phase) -----------------------------------------------------------


def churn(uri: str, prefix: str, threads: int, seconds: float, rate: float) -> dict[str, Any]:
    """Put domains through their round from ``threads`` threads for ``seconds``, ``rate``
    operations per second in all; a worker finishes its round before it stops."""
    period = threads / rate  # seconds between one thread's operations
    lock = threading.Lock()
    done: Counter[str] = Counter()
    errors: list[str] = []

    def work(conn: Any, index: int, stop: threading.Event) -> None:
        pacer = Pacer(period, period * index / threads)
        serial = 0
        while not stop.is_set():
            name = f"{prefix}-{index}-{serial}"
            serial += 1
            dom = None
            for operation, event in ROUND:
                pacer.wait()
                try:
                    if operation == "define":
                        dom = conn.defineXML(minimal_domain_xml(name))
                    else:
                        getattr(dom, {"start": "create"}.get(operation, operation))()
                except libvirt.libvirtError as exc:
                    with lock:
                        errors.append(f"{operation} {name}: {exc}")
                    return
                with lock:
                    done[event] += 1

    started = time.monotonic()
    run_load_threads(uri, threads, seconds, work)
    return {"done": dict(done), "seconds": round(time.monotonic() - started, 1),
            "errors": errors[:5]}


# -- the clients (one process for the whole run) ------------------------------------------------


class Clients:
    """Scrapes, control API calls and stream followers coming and going, and one follower
    counting the churn's events, until told the run is over."""

    def __init__(self, socket: str, metrics: str, prefix: str, since: int) -> None:
        self.socket = socket
        self.metrics = metrics
        self.prefix = prefix
        self.counts: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.synthetic: Counter[str] = Counter()
        self.gaps = {"missing": 0, "repeated": 0}
        self.last_seq = since
        self.notices: Counter[str] = Counter()
        self.scrape_ms: list[float] = []
        self.changed = asyncio.Event()

    def _session(self) -> Any:
        import aiohttp

        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.socket))

    async def scrape_every_second(self) -> None:
        """GET /metrics once a second, as Prometheus does (its headers, gzip)."""
        import aiohttp

        headers = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
                   "Accept-Encoding": "gzip"}
        async with aiohttp.ClientSession() as session:
            while True:
                started = time.perf_counter()
                try:
                    async with session.get(self.metrics, headers=headers) as response:
                        await response.read()
                        self.counts[f"scrape_{response.status}"] += 1
                except aiohttp.ClientError:
                    self.counts["scrape_failed"] += 1
                self.scrape_ms.append((time.perf_counter() - started) * 1e3)
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))

    async def api_clients(self) -> None:
        """A new control API client every half second: a few reads, then it disconnects."""
        import aiohttp

        paths = ("/v1/status", "/v1/domains", "/v1/ops", "/v1/events?since=0&kind=lifecycle")
        while True:
            try:
                async with self._session() as session:
                    for path in random.sample(paths, 2):
                        async with session.get(f"http://virtmon{path}") as response:
                            await response.read()
                            self.counts[f"api_{response.status}"] += 1
            except aiohttp.ClientError:
                self.counts["api_failed"] += 1
            await asyncio.sleep(0.5)

    async def passing_followers(self) -> None:
        """Every second a follower that reads for 1-5 s and goes; a few are open at a time."""
        import aiohttp

        async def one() -> None:
            try:
                async with self._session() as session, session.get(
                    "http://virtmon/v1/events?follow=1",
                    timeout=aiohttp.ClientTimeout(total=None),
                ) as response:
                    self.counts[f"follower_{response.status}"] += 1
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(random.uniform(1, 5)):
                            async for _line in response.content:
                                self.counts["follower_lines"] += 1
            except aiohttp.ClientError:
                self.counts["follower_failed"] += 1

        tasks: set[asyncio.Task[None]] = set()
        while True:
            task = asyncio.ensure_future(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(1.0)

    async def count_events(self, ready: asyncio.Event) -> None:
        """Follow the whole run from where the journal stood at the start; resume after the last
        number read whenever the stream ends (a client that keeps up loses nothing)."""
        import aiohttp

        while True:
            try:
                async with self._session() as session, session.get(
                    f"http://virtmon/v1/events?follow=1&since={self.last_seq}",
                    timeout=aiohttp.ClientTimeout(total=None),
                ) as response:
                    ready.set()
                    async for line in response.content:
                        self._count(json.loads(line))
            except aiohttp.ClientError:
                self.counts["counter_reconnects"] += 1
            self.counts["counter_resumes"] += 1
            await asyncio.sleep(0.5)

    def _count(self, item: dict[str, Any]) -> None:
        if "seq" not in item:
            notice = next(iter(item))
            self.notices[notice] += 1
            return
        seq = item["seq"]
        gaps = sequence_gaps([seq], self.last_seq)
        self.gaps = {key: self.gaps[key] + gaps[key] for key in gaps}
        self.last_seq = max(seq, self.last_seq)
        if item["kind"] == "lifecycle" and (item.get("domain") or "").startswith(self.prefix):
            (self.synthetic if item.get("synthetic") else self.received)[item["name"]] += 1
            self.changed.set()

    async def run(self, settle: float) -> dict[str, Any]:
        """Run until the expected counts arrive on stdin; wait for them (at most ``settle``)."""
        ready = asyncio.Event()
        counter = asyncio.ensure_future(self.count_events(ready))
        await asyncio.wait_for(ready.wait(), 30)
        background = [asyncio.ensure_future(task()) for task in
                      (self.scrape_every_second, self.api_clients, self.passing_followers)]
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        expected: Counter[str] = Counter(json.loads(line))
        deadline = time.monotonic() + settle
        while events_lost(expected, self.received) and time.monotonic() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1.0)
        for task in [counter, *background]:
            task.cancel()
        await asyncio.gather(counter, *background, return_exceptions=True)
        return {"expected": dict(expected), "received": dict(self.received),
                "synthetic": dict(self.synthetic), "lost": events_lost(expected, self.received),
                "sequence": self.gaps, "last_seq": self.last_seq, "notices": dict(self.notices),
                "counts": dict(self.counts),
                "scrape_p50_ms": round(median(self.scrape_ms), 2),
                "scrape_max_ms": round(max(self.scrape_ms, default=0.0), 2)}


# -- the daemon side (this process) -------------------------------------------------------------


def python_objects() -> dict[str, int]:
    """Objects the garbage collector tracks, among them libvirt's domain objects (each holds a
    reference in libvirt), and the memory blocks Python has allocated: what grows in Python
    rather than in C libraries. Objects alive when the daemon froze them at start
    (``gc.freeze()``) are not counted."""
    tracked = gc.get_objects()
    domains = sum(isinstance(obj, libvirt.virDomain) for obj in tracked)
    return {"python_objects": len(tracked), "allocated_blocks": sys.getallocatedblocks(),
            "domain_objects": domains}


def libvirt_connections(daemon: Any) -> int:
    """Connections to libvirtd the daemon holds open: its pools' and the events connection.
    (Not counted from the garbage collector: those made before ``gc.freeze()`` are invisible to
    it, so a restart that replaces them would look like growth from nothing.)"""
    pools = [daemon.pool, daemon.domain_connection, daemon.jobs.pool,
             daemon.executor.reads, daemon.executor.writes]
    if daemon.guest_agent is not None:
        pools.append(daemon.guest_agent.pool)
    return sum(pool.size for pool in pools) + (daemon.supervisor.conn is not None)


def table_rows(database: Path, tables: Sequence[str]) -> dict[str, int]:
    """Row counts of ``tables`` in ``database`` (read-only; 0 for a table not made yet)."""
    rows = dict.fromkeys(tables, 0)
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        for table in tables:
            with contextlib.suppress(sqlite3.OperationalError):
                rows[table] = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return rows


def sample(daemon: Any, started: float) -> dict[str, Any]:
    """One sample of the daemon's footprint (in a worker thread: it reads files and SQLite)."""
    status = Path("/proc/self/status").read_text().splitlines()
    rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    database = daemon.journal.path
    files = [database, database.with_name(database.name + "-wal")]
    rows = table_rows(database, ("events", "outbox", "alerts"))
    return {
        "t_s": round(time.monotonic() - started, 1),
        "rss_mib": round(rss_kib / 1024, 2),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
        **python_objects(),
        "connections": libvirt_connections(daemon),
        "domain_cache": len(daemon.domain_cache.info),
        "inventory": len(daemon.inventory),
        "journal_rows": rows["events"],
        "outbox_rows": rows["outbox"],
        "alert_rows": rows["alerts"],
        "database_bytes": sum(path.stat().st_size for path in files if path.exists()),
        "load_1m": round(os.getloadavg()[0], 2),
    }


async def reconnected(daemon: Any, losses: int) -> float:
    """Seconds until the daemon has noticed more than ``losses`` lost connections in all and
    is connected again (at most two minutes)."""
    from tests.waiting import wait_until

    supervisor = daemon.supervisor
    started = time.monotonic()
    await wait_until(lambda: supervisor.reconnects.total() > losses and supervisor.connected,
                     120.0, 0.1)
    return time.monotonic() - started


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the daemon under churn, restarts and clients; sample it; put the figures together."""
    from tests.lab.private_libvirtd import private_libvirtd
    from virtmon.virt.eventloop import register_event_impl

    register_event_impl()
    prefix = f"soak-{os.getpid()}"
    me = [sys.executable, "-m", "bench.bench_soak"]
    samples: list[dict[str, Any]] = []
    phases: list[dict[str, Any]] = []
    reconnect_s: list[float] = []
    duration = args.minutes * 60.0
    with short_tmp() as tmp, private_libvirtd('unix_sock_rw_perms = "0777"\n') as libvirtd:
        cfg = daemon_config(tmp, libvirtd.uri, 1.0,
                            collect={"collectors": {"admin": False}})
        async with running_daemon(cfg) as daemon:
            started = time.monotonic()

            async def sampler() -> None:
                while True:
                    samples.append(await asyncio.to_thread(sample, daemon, started))
                    await asyncio.sleep(args.sample_every)

            clients = await asyncio.create_subprocess_exec(
                *me, "--role", "clients", "--socket", str(daemon.control_socket),
                "--metrics", f"http://{cfg.metrics.listen}/metrics", "--prefix", prefix,
                "--since", str(daemon.journal.last_seq),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
            assert clients.stdin is not None and clients.stdout is not None
            sampling = asyncio.ensure_future(sampler())
            try:
                ready = await asyncio.wait_for(clients.stdout.readline(), 60)
                assert ready.strip() == b"ready", ready
                while (left := duration - (time.monotonic() - started)) > 1:
                    phase = await asyncio.create_subprocess_exec(
                        *me, "--role", "churn", "--uri", libvirtd.uri, "--prefix", prefix,
                        "--threads", str(args.threads), "--rate", str(args.rate),
                        "--seconds", str(min(args.restart_every, left)),
                        stdout=asyncio.subprocess.PIPE,
                    )
                    out, _ = await phase.communicate()
                    phases.append(json.loads(out.decode().strip().splitlines()[-1]))
                    libvirtd.check_alive()
                    if duration - (time.monotonic() - started) > 1:
                        losses = daemon.supervisor.reconnects.total()
                        await asyncio.to_thread(libvirtd.restart)
                        reconnect_s.append(await reconnected(daemon, losses))
                expected: Counter[str] = Counter()
                for phase_result in phases:
                    expected.update(phase_result["done"])
                clients.stdin.write(json.dumps(expected).encode() + b"\n")
                await clients.stdin.drain()
                out, _ = await asyncio.wait_for(clients.communicate(), args.settle + 60)
                counted = json.loads(out.decode().strip().splitlines()[-1])
            finally:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
                if clients.returncode is None:
                    clients.kill()
                    await clients.wait()
            samples.append(await asyncio.to_thread(sample, daemon, started))
            dropped = dict(daemon.bus.dropped)
            reconnects = dict(daemon.supervisor.reconnects)
    return summarize(args, samples, phases, counted, reconnect_s, reconnects, dropped,
                     libvirtd.starts)


def summarize(args: argparse.Namespace, samples: list[dict[str, Any]],
              phases: list[dict[str, Any]], counted: dict[str, Any], reconnect_s: list[float],
              reconnects: dict[str, int], dropped: dict[str, int], starts: int
              ) -> dict[str, Any]:
    """The figures of a run, and its time series written to bench/results/."""
    warmup = min(args.warmup, args.minutes * 60.0 / 4)
    # The last sample is taken once the churn and the clients have ended: what the daemon holds
    # at rest, kept in the series files. Growth is judged on the samples taken while they ran
    # (that one moment without any client would weigh in the last quarter alone).
    after = [s for s in samples[:-1] if s["t_s"] >= warmup]
    flat_figures = ("rss_mib", "fds", "threads", "connections", "domain_objects", "domain_cache",
                    "inventory", "outbox_rows")
    growths = {name: growth([s[name] for s in after]) for name in flat_figures}
    operations = sum(sum(phase["done"].values()) for phase in phases)
    churn_seconds = sum(phase["seconds"] for phase in phases)
    journal_events = counted["last_seq"]
    database_growth = after[-1]["database_bytes"] - after[0]["database_bytes"]
    journal_growth = after[-1]["journal_rows"] - after[0]["journal_rows"]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"soak-{args.minutes:g}min".replace(".", "_")
    series = RESULTS_DIR / f"{stem}.csv"
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(samples, indent=1) + "\n",
                                              encoding="utf-8")
    with series.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)
    return {
        "minutes": args.minutes,
        "warmup_s": warmup,
        "samples": len(samples),
        "sample_every_s": args.sample_every,
        "operations": operations,
        "operations_per_second": round(operations / churn_seconds, 1) if churn_seconds else 0,
        "churn_errors": [e for phase in phases for e in phase["errors"]][:5],
        "libvirtd_restarts": starts - 1,
        "daemon_reconnects": reconnects,
        "reconnect_max_s": round(max(reconnect_s, default=0.0), 2),
        "growth": growths,
        "flat": all(g["flat"] for g in growths.values()),
        "rss_mib_max": max(s["rss_mib"] for s in samples),
        "journal_bytes_per_event": (round(database_growth / journal_growth)
                                    if journal_growth > 0 else 0),
        "journal_events": journal_events,
        "events_expected": sum(counted["expected"].values()),
        "events_received": sum(counted["received"].values()),
        "events_lost": counted["lost"] + counted["sequence"]["missing"],
        "sequence": counted["sequence"],
        "synthetic_events": counted["synthetic"],
        "bus_dropped": dropped,
        "stream_notices": counted["notices"],
        "client_counts": counted["counts"],
        "scrape_p50_ms": counted["scrape_p50_ms"],
        "scrape_max_ms": counted["scrape_max_ms"],
        "load_1m_median": median([s["load_1m"] for s in samples]),
        "load_1m_max": max(s["load_1m"] for s in samples),
        "series": str(series.relative_to(ROOT)),
    }


def main() -> None:
    """Parse the arguments and play one role; the default role prints the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("soak", "churn", "clients"), default="soak")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0,
                        help="churn operations per second in all")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--restart-every", type=float, default=150.0,
                        help="seconds between restarts of the private libvirtd")
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=120.0,
                        help="seconds not held to flatness (at most a quarter of the run)")
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--uri", default="")
    parser.add_argument("--prefix", default="soak")
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--socket", default="")
    parser.add_argument("--metrics", default="")
    parser.add_argument("--since", type=int, default=0)
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    if args.role == "churn":
        emit(churn(args.uri, args.prefix, args.threads, args.seconds, args.rate))
    elif args.role == "clients":
        clients = Clients(args.socket, args.metrics, args.prefix, args.since)
        emit(asyncio.run(clients.run(args.settle)))
    else:
        quiet_logging()
        emit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
