"""Alerts at scale: 10,000 firing alerts on a real two-peer Alertmanager cluster.

A virtmon Daemon runs in this process on the in-process test driver (``test:///default``; no
libvirtd needed) with one event rule (a lifecycle ``stopped/crashed`` event fires it) and one
``alertmanager`` receiver listing both peers of a real cluster (Debian's
``prometheus-alertmanager``, started by tests/alerts/alertmanager.py, each peer a process of its
own). Crash events of ``--alerts`` distinct domains are published into the daemon's bus, as
libvirt's callback would, paced at ``--rate`` per second, so that as many alerts fire. Phases:

1. ``deliver``: publish; the time until each peer has accepted every alert (2xx answers, as
   virtmon counts them) and until both peers list them all (each peer's ``GET /api/v2/alerts``
   polled, counted in the body: parsing 10,000 alerts would hold this process's GIL, which the
   daemon's loop shares; one poll takes 0.2-2 s at this size, so this figure is that coarse).
2. ``resends``: both peers sampled after each of ``--intervals`` re-send intervals
   (``--resend-interval``). virtmon sends each alert with ``endsAt`` 4 intervals ahead, so only
   samples beyond the fourth interval show whether the re-send rounds keep Alertmanager's view
   complete; the first three are the target in docs/PERFORMANCE.md. Each round of each peer
   (its wall time, alerts and requests; ``Target.last_resend``), the loop's lag while the
   rounds run and the daemon process's CPU in the phase.
3. ``control``: ``alerts.list`` (firing, the API's limit of 10,000) and ``alerts.outbox`` through
   the control socket, each ``--repeat`` times, request to parsed answer in a client process of
   its own (the ``call`` role), the loop's lag meanwhile, and the outbox's and the alerts
   table's rows by state (read-only SQLite).
4. ``silences``: a silence over every domain (``alerts.silence``, domain glob ``*``); then
   ``--silenced`` more crashes of new domains, held back (the time until the engine has held
   them all back; the peers must not get them); then ``alerts.unsilence``: the time from its
   request until every release is enqueued, then ``alerts.outbox`` with the releases pending,
   and the time until each peer has accepted them and both list them.

The daemon's RSS (``/proc/self``, so with the bench's own small share) before and after each
phase. One result line of JSON on stdout.

    python -m bench.bench_alerts_scale [--alerts 10000] [--resend-interval 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench import (
    ROOT,
    LagMeter,
    daemon_config,
    emit,
    quiet_logging,
    rss_mib,
    running_daemon,
    short_tmp,
)
from bench.bench_alerts import CRASH_RULE, URI

RULE = str(CRASH_RULE["name"])


# -- Alertmanager's view ---------------------------------------------------------------------


def peer_count(url: str) -> int:
    """The rule's alerts a peer holds (not expired; any state: active, silenced, unprocessed).

    Each alert of ``GET /api/v2/alerts`` has one ``fingerprint`` key, and no label of ours is
    called that, so counting the key counts the alerts without parsing the body.
    """
    query = urlencode({"filter": f'alertname="{RULE}"'})
    with urllib.request.urlopen(f"{url}/api/v2/alerts?{query}", timeout=60) as response:
        return response.read().count(b'"fingerprint":')


async def peer_counts(urls: Sequence[str]) -> list[int]:
    """Every peer's count, asked at once."""
    return list(await asyncio.gather(*(asyncio.to_thread(peer_count, u) for u in urls)))


async def until_peers_hold(urls: Sequence[str], expected: int, patience: float
                           ) -> tuple[float | None, list[int]]:
    """Poll until every peer holds ``expected``: (seconds it took or None, the last counts)."""
    started = time.monotonic()
    while True:
        counts = await peer_counts(urls)
        if all(c >= expected for c in counts):
            return time.monotonic() - started, counts
        if time.monotonic() - started > patience:
            return None, counts
        await asyncio.sleep(0.25)


# -- the daemon's side -----------------------------------------------------------------------


async def publish(daemon: Any, prefix: str, count: int, rate: float) -> dict[str, Any]:
    """``count`` crash events of distinct domains at ``rate``/s; a refused one (the bus's queue
    full) is offered again after a pause, so that every domain's alert fires."""
    from virtmon.events.model import Event

    loop = asyncio.get_running_loop()
    refused = 0
    start = loop.time()
    for i in range(count):
        pause = start + i / rate - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
        event = Event(time=time.time(), uri=URI, kind="lifecycle", name="stopped",
                      detail="crashed", domain=f"{prefix}-{i:06d}")
        while not daemon.bus.publish(event):
            refused += 1
            await asyncio.sleep(0.01)
    seconds = loop.time() - start
    return {"published": count, "bus_refused": refused, "publish_s": round(seconds, 3),
            "publish_rate": round(count / seconds, 1) if seconds else 0.0}


async def until(predicate: Callable[[], bool], patience: float, tick: float = 0.01
                ) -> float | None:
    """Seconds until ``predicate()`` holds (checked on the loop every ``tick``), None if never."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > patience:
            return None
        await asyncio.sleep(tick)
    return time.monotonic() - started


async def when(predicate: Callable[[], bool], patience: float) -> float | None:
    """The ``time.time()`` at which ``predicate()`` held (checked every 10 ms), None if never."""
    return None if await until(predicate, patience) is None else time.time()


class StallMeter(LagMeter):
    """A LagMeter that also keeps when (``time.time()``) each lag over ``stall`` s ended."""

    def __init__(self, stall: float = 0.05) -> None:
        super().__init__()
        self.stall = stall
        self.stalls: list[tuple[float, float]] = []

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.tick
            await asyncio.sleep(self.tick)
            lag = max(0.0, loop.time() - due)
            self.lags.append(lag)
            if lag > self.stall:
                self.stalls.append((time.time(), lag))

    def stalls_since(self, since: float) -> list[list[float]]:
        """The stalls as [seconds after ``since``, lag in ms]."""
        return [[round(at - since, 3), round(lag * 1e3, 1)] for at, lag in self.stalls]


class RoundLog:
    """Every finished re-send round of each target, as ``Target.last_resend`` shows it."""

    def __init__(self, targets: Sequence[Any]) -> None:
        self.targets = list(targets)
        self.rounds: list[list[Any]] = [[] for _ in self.targets]
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        seen: list[Any] = [t.last_resend for t in self.targets]
        while True:
            for index, target in enumerate(self.targets):
                last = target.last_resend
                if last is not None and last is not seen[index]:
                    self.rounds[index].append((last, rss_mib()["rss_mib"]))
                    seen[index] = last
            await asyncio.sleep(0.05)  # rounds are a resend interval apart

    def start(self) -> None:
        """Begin watching."""
        self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def of(self, alerts: int, since: float = 0.0) -> list[dict[str, Any]]:
        """The rounds that re-sent ``alerts`` alerts and ended after ``since``, per peer."""
        return [{"peer": index, "ended_at": r.ended_at, "seconds": round(r.seconds, 3),
                 "alerts": r.alerts, "requests": r.requests, "complete": r.complete,
                 "rss_mib": rss}
                for index, rounds in enumerate(self.rounds) for r, rss in rounds
                if r.alerts == alerts and r.ended_at > since]


def accepted_by_each(targets: Sequence[Any], more: int, patience: float
                     ) -> list[asyncio.Future[float | None]]:
    """For each target, the ``time.time()`` at which its peer has accepted ``more`` alerts
    more than now (2xx answers: virtmon's view, exact, where polling the peers is not)."""
    return [asyncio.ensure_future(when(
        lambda t=t, goal=t.outcomes["delivered"] + more: t.outcomes["delivered"] >= goal,
        patience)) for t in targets]


async def since_each(moments: Sequence[asyncio.Future[float | None]], began: float
                     ) -> list[float | None]:
    """Each moment as seconds after ``began`` (None: it never came)."""
    return [None if m is None else round(m - began, 3) for m in await asyncio.gather(*moments)]


def round_figures(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Wall time and requests of a set of rounds."""
    seconds = [r["seconds"] for r in rounds]
    return {"rounds": len(rounds),
            "round_median_s": round(statistics.median(seconds), 3) if seconds else None,
            "round_max_s": round(max(seconds), 3) if seconds else None,
            "requests_per_round": sorted({r["requests"] for r in rounds}),
            "incomplete_rounds": sum(not r["complete"] for r in rounds)}


def table_rows(path: Path) -> dict[str, Any]:
    """The outbox's and the alerts table's rows by state, and the database's size on disk."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        outbox = dict(db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
        alerts = dict(db.execute("SELECT state, COUNT(*) FROM alerts GROUP BY state").fetchall())
    finally:
        db.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {"outbox_rows": outbox, "outbox_rows_total": sum(outbox.values()),
            "alert_rows": alerts, "database_mib": round(size / 2**20, 1)}


def call(socket: str, operation: str, arguments: str) -> dict[str, Any]:
    """The ``call`` role: one control operation, timed from request to parsed answer; what the
    benchmark needs of the answer (not the answer: parsing it again would cost the daemon's
    process as much as this one)."""
    from virtmon.ctl.client import ControlClient

    client = ControlClient(socket, timeout=120)
    started, started_at = time.monotonic(), time.time()
    result = client.call(operation, **json.loads(arguments))
    seconds = time.monotonic() - started
    return {"seconds": seconds, "started_at": started_at, "id": result.get("id"),
            "alerts": len(result.get("alerts", ())),
            "pending": sum(q["pending"] for q in result.get("queues", ()))}


async def timed_call(socket: str, operation: str, **arguments: Any) -> dict[str, Any]:
    """One control operation through the socket from a process of its own (a client in this
    one would share the daemon's GIL); its ``call`` summary."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.bench_alerts_scale", "--role", "call", socket, operation,
        json.dumps(arguments), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{operation} {arguments}: the call failed ({proc.returncode})")
    summary: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    return summary


async def control_figures(socket: str, repeat: int) -> dict[str, Any]:
    """``alerts.list`` and ``alerts.outbox`` at this size, ``repeat`` times each."""
    lag = LagMeter()
    listed: list[float] = []
    outboxed: list[float] = []
    rows = pending = 0
    async with lag.running():
        for _ in range(repeat):
            result = await timed_call(socket, "alerts.list", state="firing", limit=10000)
            listed.append(result["seconds"])
            rows = result["alerts"]
            result = await timed_call(socket, "alerts.outbox", limit=10000)
            outboxed.append(result["seconds"])
            pending = result["pending"]
    return {"list_firing_rows": rows, "list_median_s": round(statistics.median(listed), 3),
            "list_max_s": round(max(listed), 3),
            "outbox_pending": pending, "outbox_median_s": round(statistics.median(outboxed), 3),
            "outbox_max_s": round(max(outboxed), 3), **lag.summary()}


# -- the scenario ----------------------------------------------------------------------------


@dataclass
class Scene:
    """What every phase works with: the running daemon, the peers, the control socket."""

    args: argparse.Namespace
    daemon: Any
    urls: list[str]
    socket: str
    rounds: RoundLog
    tag: str

    @property
    def targets(self) -> list[Any]:
        """The daemon's delivery targets, one per peer."""
        return list(self.daemon.alerts.targets)


async def deliver_phase(scene: Scene) -> dict[str, Any]:
    """Phase 1: publish; until each peer accepted all, and until both list all."""
    args, urls, count = scene.args, scene.urls, scene.args.alerts
    began = time.time()
    accepted = accepted_by_each(scene.targets, count, args.patience)
    published = await publish(scene.daemon, f"{scene.tag}-a", count, args.rate)
    held, counts = await until_peers_hold(urls, count, args.patience)
    listed_at = time.time()
    fetch = time.monotonic()
    await peer_counts(urls)
    return {**published, "accepted_s": await since_each(accepted, began),
            "peers_hold_all_s": None if held is None else round(listed_at - began, 3),
            "peer_counts": counts, "requests": [t.attempts for t in scene.targets],
            "peer_get_alerts_s": round(time.monotonic() - fetch, 3)}


async def resends_phase(scene: Scene) -> dict[str, Any]:
    """Phase 2: both peers sampled after each interval, from the moment both held all."""
    args, count, interval = scene.args, scene.args.alerts, scene.args.resend_interval
    lag, cpu, since = StallMeter(), time.process_time(), time.time()
    samples: list[list[int]] = []
    async with lag.running():
        begin = time.monotonic()
        for k in range(1, args.intervals + 1):
            await asyncio.sleep(max(0.0, begin + k * interval - time.monotonic()))
            samples.append(await peer_counts(scene.urls))
    resent = scene.rounds.of(count, since)
    return {"samples": samples, "resend_interval_s": interval,
            "all_held_first_3": all(c == count for s in samples[:3] for c in s),
            "all_held": all(c == count for s in samples for c in s),
            **round_figures(resent), "round_list": resent,
            "daemon_cpu_s": round(time.process_time() - cpu, 3),
            "outcomes": [dict(t.outcomes) for t in scene.targets], **lag.summary(),
            "started_at": since, "stalls": lag.stalls_since(since)}


async def silences_phase(scene: Scene) -> dict[str, Any]:
    """Phase 4: a silence over every domain, more crashes held back, the silence lifted."""
    args, service = scene.args, scene.daemon.alerts
    silences, targets = service.silences, scene.targets
    made = await timed_call(scene.socket, "alerts.silence", domain="*", duration="1h",
                            comment="bench")
    dropped, fired = silences.dropped, service.engine.notifications["firing"]
    started = time.monotonic()
    published = await publish(scene.daemon, f"{scene.tag}-s", args.silenced, args.rate)
    all_held_back = await until(lambda: silences.dropped - dropped >= args.silenced,
                                args.patience)
    held_back_s = time.monotonic() - started
    quiet = await peer_counts(scene.urls)
    # Watched from before the call: the releases may be enqueued before it returns.
    enqueued = asyncio.ensure_future(when(lambda: not silences.holds_any(), args.patience + 30))
    accepted = accepted_by_each(targets, args.silenced, args.patience + 30)
    unsilenced = await timed_call(scene.socket, "alerts.unsilence", id=made["id"])
    began = unsilenced["started_at"]
    enqueued_at = await enqueued
    # After the releases are enqueued (earlier, it would compete with them for the store):
    # the outbox while the releases drain.
    outbox = await timed_call(scene.socket, "alerts.outbox", limit=10000)
    released = service.engine.notifications["firing"] - fired
    total = args.alerts + args.silenced
    held, counts = await until_peers_hold(scene.urls, total, args.patience)
    listed_at = time.time()
    # A round of each peer at the larger size, to see the round grow with it.
    await until(lambda: len(scene.rounds.of(total)) >= len(targets),
                args.resend_interval + args.patience, 0.1)
    return {
        "silence_s": round(made["seconds"], 3), "silenced": args.silenced,
        **{f"publish_{k}": v for k, v in published.items()},
        "held_back": silences.dropped - dropped,
        "all_held_back_s": None if all_held_back is None else round(held_back_s, 3),
        "peer_counts_while_silenced": quiet,
        "unsilence_s": round(unsilenced["seconds"], 3),
        "releases_enqueued_s": None if enqueued_at is None else round(enqueued_at - began, 3),
        "released": released,
        "outbox_with_releases_s": round(outbox["seconds"], 3),
        "outbox_pending_with_releases": outbox["pending"],
        "accepted_s": await since_each(accepted, began),
        "peers_hold_all_s": None if held is None else round(listed_at - began, 3),
        "peer_counts": counts,
        "grown_rounds": round_figures(scene.rounds.of(total)),
        "grown_tables": table_rows(service.store.path)}


async def scenario(args: argparse.Namespace) -> dict[str, Any]:
    """The four phases on one daemon and one cluster, the daemon's RSS after each."""
    from tests.alerts import alertmanager

    with short_tmp() as tmp, alertmanager.cluster(tmp) as urls:
        receiver: dict[str, Any] = {"name": "am", "kind": "alertmanager", "urls": urls,
                                    "resend_interval": args.resend_interval}
        if args.batch_size:
            receiver["batch_size"] = args.batch_size
        cfg = daemon_config(tmp, URI, 60.0, collect={"collectors": {"admin": False}},
                            control={"allow_write": True},
                            alerts={"default_rules": False, "rules": [CRASH_RULE],
                                    "receivers": [receiver]})
        async with running_daemon(cfg) as daemon:
            scene = Scene(args, daemon, urls, str(cfg.control.socket),
                          RoundLog(daemon.alerts.targets), f"sc{os.getpid()}")
            memory: dict[str, Any] = {"start": rss_mib()}
            scene.rounds.start()
            try:
                deliver = await deliver_phase(scene)
                memory["delivered"] = rss_mib()
                resends = await resends_phase(scene)
                memory["resends"] = rss_mib()
                control = {**await control_figures(scene.socket, args.repeat),
                           **table_rows(daemon.alerts.store.path)}
                silences = await silences_phase(scene)
                memory["silences"] = rss_mib()
            finally:
                await scene.rounds.stop()
            batch_size = scene.targets[0].receiver.batch_size
    return {"uri": URI, "alerts": args.alerts, "peers": len(urls), "rate": args.rate,
            "resend_interval_s": args.resend_interval, "batch_size": batch_size,
            "deliver": deliver, "resends": resends, "control": control, "silences": silences,
            "memory": memory, "rss_growth_mib": round(
                memory["resends"]["rss_mib"] - memory["start"]["rss_mib"], 1)}


def main() -> None:
    """Parse the arguments, run the scenario, print its JSON result."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--role", choices=("bench", "call"), default="bench")
    parser.add_argument("call", nargs="*", help="call role: SOCKET OPERATION ARGUMENTS_JSON")
    parser.add_argument("--alerts", type=int, default=10000, help="firing alerts")
    parser.add_argument("--rate", type=float, default=2000.0, help="events published per second")
    parser.add_argument("--resend-interval", type=float, default=10.0,
                        help="the receiver's resend_interval (seconds)")
    parser.add_argument("--intervals", type=int, default=6,
                        help="resend intervals to sample both peers after (≥ 5 to pass the "
                             "first endsAt, 4 intervals)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="the receiver's batch_size (default: virtmon's)")
    parser.add_argument("--silenced", type=int, default=10000,
                        help="alerts fired while a silence holds every domain")
    parser.add_argument("--repeat", type=int, default=3, help="calls of each control operation")
    parser.add_argument("--patience", type=float, default=120.0,
                        help="seconds each wait may take")
    args = parser.parse_args()
    if args.role == "call":
        emit(call(*args.call))
        return
    quiet_logging()
    emit(asyncio.run(scenario(args)))


if __name__ == "__main__":
    main()
