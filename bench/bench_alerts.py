"""Alerts benchmark: event published on the bus → alert rule → outbox → webhook receiver.

A virtmon Daemon runs in a process of its own on the in-process test driver (``test:///default``;
no libvirtd needed) with one event rule (a lifecycle ``stopped/crashed`` event fires it) and one
``json`` receiver. The receiver is an aiohttp server in another process, so the daemon's CPU
figure is the daemon's alone and the receiver never shares the daemon's loop. The daemon's
process publishes uniquely named crash events into the daemon's bus (as libvirt's callback
would: ``daemon.bus.publish(Event(...))``), paced at ``--rate`` per second, so each event makes
exactly one alert. Latency is the receiver's ``time.time()`` when an alert's request arrived
minus the ``time.time()`` the event was published with (one clock, one machine).

Each receiver of ``--receivers`` runs in a process of its own, one result entry each: a kind
alone (``alertmanager``) is that kind at virtmon's default settings (result ``<kind>_defaults``),
a kind with a batch size (``json:1``) that kind with that ``batch_size`` (result
``<kind>_batch_<n>``). The receiver reads each kind's body (virtmon's json document, an
Alertmanager ``postableAlerts`` array, a CloudEvents event or batch). The default list is every
kind at its defaults and ``json:1``, one alert per request. Two phases per receiver:

- ``steady``: ``--events`` events at ``--rate``/s to a receiver that answers 200. Latency p50,
  p99 and max, delivered vs published (lost, duplicated), wall time (first publish to last
  arrival), and the daemon process's CPU seconds per 1,000 alerts (``time.process_time``).
- ``outage``: the receiver answers 503 for ``--outage`` seconds from the phase's start, then
  200, while ``--backlog`` events are published at ``--rate``/s. Backlog drain: from recovery
  to the first accepted request, and to the last alert delivered. Retries follow the
  receiver's backoff (``--backoff-initial``, default virtmon's 1 s; full jitter), so the
  first figure includes up to one backoff wait.

    python -m bench.bench_alerts [--events 2000] [--rate 500] [--receivers json,json:1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bench import (
    ROOT,
    daemon_config,
    emit,
    percentile,
    quiet_logging,
    rss_mib,
    run_scenario,
    running_daemon,
    short_tmp,
)

URI = "test:///default"
# The shape of tests/alerts/control_env.py's CRASH_RULE.
CRASH_RULE = {"name": "Crash", "severity": "critical", "summary": "{domain} crashed",
              "match": {"kind": "lifecycle", "name": "stopped", "detail": "crashed"},
              "resolve": {"kind": "lifecycle", "name": "started"}}


# -- the webhook receiver (a process of its own) -----------------------------------------------


class Receiver:
    """Records each firing alert of each accepted request with its arrival time.

    Answers 503 while ``time.time() < fail_until``, else 200. Only alerts of 2xx answers count
    as delivered (a 503'd request is retried by virtmon, by design).
    """

    def __init__(self) -> None:
        self.prefix = ""
        self.fail_until = 0.0
        self.arrivals: dict[str, list[float]] = {}
        self.other = 0  # accepted alerts not of this phase (an earlier phase's, or resolved)
        self.batches: list[int] = []  # alerts per accepted request
        self.refused = 0  # requests answered 503
        self.refused_alerts = 0
        self.changed = asyncio.Event()

    def reset(self, prefix: str, fail_until: float) -> None:
        """A new phase: forget what arrived, match ``prefix``, refuse until ``fail_until``."""
        self.prefix = prefix
        self.fail_until = fail_until
        self.arrivals = {}
        self.other = 0
        self.batches = []
        self.refused = 0
        self.refused_alerts = 0

    async def handle(self, request: Any) -> Any:
        """One webhook request."""
        from aiohttp import web

        body = await request.read()
        arrival = time.time()
        alerts = received_alerts(json.loads(body), arrival)
        if arrival < self.fail_until:
            self.refused += 1
            self.refused_alerts += len(alerts)
            return web.Response(status=503, text="down")
        self.batches.append(len(alerts))
        for domain, status in alerts:
            if status == "firing" and domain.startswith(self.prefix):
                self.arrivals.setdefault(domain, []).append(arrival)
            else:
                self.other += 1
        self.changed.set()
        return web.Response(status=200, text="ok")

    async def wait(self, expected: int, patience: float, settle: float) -> dict[str, Any]:
        """Until ``expected`` distinct alerts arrived (or ``patience`` s), then ``settle`` more
        seconds for late duplicates; the phase's records."""
        deadline = time.monotonic() + patience
        while len(self.arrivals) < expected and time.monotonic() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())
        await asyncio.sleep(settle)
        return {"arrivals": self.arrivals, "other": self.other, "batches": self.batches,
                "refused": self.refused, "refused_alerts": self.refused_alerts}


def received_alerts(document: Any, now: float) -> list[tuple[str, str]]:
    """(domain, status) of each alert in a request's body, whatever the receiver's kind."""
    if isinstance(document, dict) and "alerts" in document:  # json
        return [(a["labels"].get("domain") or "", a["status"]) for a in document["alerts"]]
    items = document if isinstance(document, list) else [document]
    found = []
    for item in items:
        if "specversion" in item:  # a CloudEvent: its data is the json alert
            found.append((item["data"]["labels"].get("domain") or "", item["data"]["status"]))
        else:  # an Alertmanager postableAlert: resolved once its endsAt has passed
            ends = datetime.fromisoformat(item["endsAt"]).timestamp()
            found.append((item["labels"].get("domain") or "", "firing" if ends > now
                          else "resolved"))
    return found


async def receive() -> None:
    """Serve on loopback; print ``ready URL``; then obey stdin, one command per line.

    ``phase PREFIX EXPECTED FAIL_UNTIL TIMEOUT SETTLE`` answers ``ok`` at once and, when the
    phase is over, one JSON line with its records. End of input ends the process.
    """
    from aiohttp import web

    recorder = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"ready http://{host}:{port}/hook", flush=True)
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            _, prefix, expected, fail_until, patience, settle = line.split()
            recorder.reset(prefix, float(fail_until))
            print("ok", flush=True)
            emit(await recorder.wait(int(expected), float(patience), float(settle)))
    finally:
        await runner.cleanup()


# -- the daemon side (a process per receiver) ----------------------------------------------------


class ReceiverProcess:
    """The receiver subprocess, driven over its stdin and stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url

    @classmethod
    async def start(cls) -> ReceiverProcess:
        """Start it and wait until it listens."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bench_alerts", "--role", "receive", cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024)  # a phase's records are one long JSON line
        assert proc.stdout is not None
        ready = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        assert ready[:1] == ["ready"], ready
        return cls(proc, ready[1])

    async def begin(self, prefix: str, expected: int, fail_until: float, patience: float,
                    settle: float) -> None:
        """Start a phase (the receiver acknowledges before this returns)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(
            f"phase {prefix} {expected} {fail_until!r} {patience} {settle}\n".encode())
        await self.proc.stdin.drain()
        ack = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert ack.strip() == b"ok", ack

    async def result(self, patience: float) -> dict[str, Any]:
        """The phase's records, once the receiver has them."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), patience)
        data: dict[str, Any] = json.loads(line)
        return data

    async def stop(self) -> None:
        """Close its input; it ends."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def publish_paced(daemon: Any, prefix: str, count: int, rate: float
                        ) -> tuple[dict[str, float], int]:
    """``count`` crash events of distinct domains at ``rate``/s from the loop.

    Returns each domain's publish time (the event's own ``time``) and how many events the bus
    refused (its ingest queue full).
    """
    from virtmon.events.model import Event

    loop = asyncio.get_running_loop()
    published: dict[str, float] = {}
    refused = 0
    start = loop.time()
    for i in range(count):
        pause = start + i / rate - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
        domain = f"{prefix}-{i:06d}"
        now = time.time()
        if daemon.bus.publish(Event(time=now, uri=URI, kind="lifecycle", name="stopped",
                                    detail="crashed", domain=domain)):
            published[domain] = now
        else:
            refused += 1
    return published, refused


def delivery(published: dict[str, float], records: dict[str, Any]) -> dict[str, Any]:
    """Delivered, lost and duplicated alerts, and latency publish → receiver, from records."""
    arrivals: dict[str, list[float]] = records["arrivals"]
    firsts = {d: min(times) for d, times in arrivals.items() if d in published}
    latencies = [firsts[d] - published[d] for d in firsts]
    batches: list[int] = records["batches"]
    duplicated = {d: len(t) for d, t in arrivals.items() if len(t) > 1}
    return {
        "published": len(published),
        "delivered": len(firsts),
        "lost": len(published) - len(firsts),
        "duplicated": sum(n - 1 for n in duplicated.values()),
        "duplicated_examples": dict(list(duplicated.items())[:5]),
        "unexpected": len(set(arrivals) - set(published)) + records["other"],
        "requests": len(batches),
        "alerts_per_request_mean": round(sum(batches) / len(batches), 2) if batches else 0.0,
        "alerts_per_request_max": max(batches, default=0),
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1e3, 3),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
        "latency_max_ms": round(max(latencies, default=0.0) * 1e3, 3),
        "first_arrival": min(firsts.values(), default=None),
        "last_arrival": max(firsts.values(), default=None),
    }


def daemon_counters(daemon: Any) -> dict[str, Any]:
    """The daemon's own view: delivery outcomes and requests of its one target, bus drops."""
    target = daemon.alerts.targets[0]
    return {"outcomes": dict(target.outcomes), "attempts": target.attempts,
            "notifications": dict(daemon.alerts.engine.notifications),
            "bus_dropped": dict(daemon.bus.dropped)}


async def steady(daemon: Any, rec: ReceiverProcess, prefix: str, events: int, rate: float,
                 patience: float, settle: float) -> dict[str, Any]:
    """Phase 1: a receiver that answers 200 throughout."""
    before = daemon_counters(daemon)
    await rec.begin(prefix, events, 0.0, patience, settle)
    cpu = time.process_time()
    started = time.time()
    published, refused = await publish_paced(daemon, prefix, events, rate)
    publish_s = time.time() - started
    records = await rec.result(patience + settle + 30)
    cpu = time.process_time() - cpu  # includes the idle settle after the last alert
    result = delivery(published, records)
    last = result.pop("last_arrival")
    result.pop("first_arrival")
    wall = (last - started) if last is not None else 0.0
    after = daemon_counters(daemon)
    return {
        **result,
        "bus_refused": refused,
        "publish_rate": round(events / publish_s, 1) if publish_s else 0.0,
        "wall_s": round(wall, 3),
        "alerts_per_second": round(result["delivered"] / wall, 1) if wall else 0.0,
        "daemon_cpu_s": round(cpu, 3),
        "cpu_s_per_1000_alerts": round(cpu / max(1, result["delivered"]) * 1000, 3),
        "daemon": counters_delta(before, after),
    }


async def outage(daemon: Any, rec: ReceiverProcess, prefix: str, events: int, rate: float,
                 down: float, patience: float, settle: float) -> dict[str, Any]:
    """Phase 2: the receiver answers 503 for ``down`` s from the phase's start, then 200."""
    before = daemon_counters(daemon)
    recovery = time.time() + down
    await rec.begin(prefix, events, recovery, patience + down, settle)
    started = time.time()
    published, refused = await publish_paced(daemon, prefix, events, rate)
    records = await rec.result(patience + down + settle + 30)
    result = delivery(published, records)
    first, last = result.pop("first_arrival"), result.pop("last_arrival")
    drain = (last - first) if first is not None and last is not None else 0.0
    return {
        **result,
        "bus_refused": refused,
        "outage_s": down,
        "published_before_recovery": sum(1 for t in published.values() if t < recovery),
        "started_before_recovery_s": round(recovery - started, 3),
        "refused_requests": records["refused"],
        "refused_alerts": records["refused_alerts"],
        "recovery_to_first_delivery_s": (round(first - recovery, 3)
                                         if first is not None else None),
        "recovery_to_all_delivered_s": (round(last - recovery, 3)
                                        if last is not None else None),
        "drain_first_to_last_s": round(drain, 3),
        "daemon": counters_delta(before, after := daemon_counters(daemon)) | {
            "attempts_total": after["attempts"]},
    }


def counters_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the daemon counted during a phase."""
    def sub(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}

    return {"outcomes": sub(after["outcomes"], before["outcomes"]),
            "requests": after["attempts"] - before["attempts"],
            "notifications": sub(after["notifications"], before["notifications"]),
            "bus_dropped": sub(after["bus_dropped"], before["bus_dropped"])}


async def scenario(kind: str, batch_size: int | None, events: int, rate: float, backlog: int,
                   down: float, backoff_initial: float, patience: float, settle: float
                   ) -> dict[str, Any]:
    """One receiver (``batch_size`` None: the default): a daemon, a receiver process, the
    steady phase, then the outage phase."""
    rec = await ReceiverProcess.start()
    try:
        with short_tmp() as tmp:
            hook: dict[str, Any] = {"name": "hook", "kind": kind, "urls": [rec.url],
                                    "backoff_initial": backoff_initial}
            if batch_size is not None:
                hook["batch_size"] = batch_size
            cfg = daemon_config(tmp, URI, 60.0,
                                collect={"collectors": {"admin": False}},
                                alerts={"default_rules": False, "rules": [CRASH_RULE],
                                        "receivers": [hook]})
            async with running_daemon(cfg) as daemon:
                used = daemon.alerts.targets[0].receiver  # the settings in effect
                tag = f"ba-{kind}{used.batch_size}-{os.getpid()}"
                first = await steady(daemon, rec, f"{tag}-s", events, rate, patience, settle)
                second = await outage(daemon, rec, f"{tag}-o", backlog, rate, down, patience,
                                      settle)
                memory = rss_mib()
    finally:
        await rec.stop()
    return {"uri": URI, "kind": kind, "defaults": batch_size is None,
            "batch_size": used.batch_size, "rate": rate,
            "backoff_initial_s": backoff_initial, "steady": first, "outage": second, **memory}


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    """Each receiver in a process of its own; their results under ``<kind>_defaults`` or
    ``<kind>_batch_<n>``."""
    results: dict[str, Any] = {}
    started = time.monotonic()
    for kind, size in args.receivers:
        spec = kind if size is None else f"{kind}:{size}"
        common = ["--role", "scenario", "--receivers", spec, "--events", str(args.events),
                  "--rate", str(args.rate), "--backlog", str(args.backlog), "--outage",
                  str(args.outage), "--backoff-initial", str(args.backoff_initial),
                  "--timeout", str(args.timeout), "--settle", str(args.settle)]
        name = f"{kind}_defaults" if size is None else f"{kind}_batch_{size}"
        results[name] = run_scenario("bench.bench_alerts", common,
                                                timeout=4 * args.timeout + 120, attempts=1)
    return {"events": args.events, "rate": args.rate, "backlog": args.backlog,
            "outage_s": args.outage, **results,
            "bench_wall_s": round(time.monotonic() - started, 1)}


def receivers(text: str) -> Sequence[tuple[str, int | None]]:
    """``alertmanager,json:1`` → (("alertmanager", None), ("json", 1)): kinds, each with a
    batch size or None (the default)."""
    found: list[tuple[str, int | None]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, size = part.partition(":")
        found.append((kind, int(size) if size else None))
    return tuple(found)


def main() -> None:
    """Parse the arguments and play one role; the default role prints the JSON result."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--role", choices=("bench", "scenario", "receive"), default="bench")
    parser.add_argument("--events", type=int, default=2000, help="steady phase: events")
    parser.add_argument("--rate", type=float, default=500.0, help="events published per second")
    parser.add_argument("--receivers", type=receivers,
                        default=receivers("json,alertmanager,cloudevents,json:1"),
                        help="receiver kinds, each alone (its defaults) or KIND:BATCH_SIZE, "
                             "comma-separated (default json,alertmanager,cloudevents,json:1)")
    parser.add_argument("--backlog", type=int, default=750,
                        help="outage phase: events published while the receiver answers 503")
    parser.add_argument("--outage", type=float, default=2.0,
                        help="outage phase: seconds the receiver answers 503")
    parser.add_argument("--backoff-initial", type=float, default=1.0,
                        help="the receiver's backoff_initial (virtmon's default: 1 s)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds a phase waits for every alert")
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds the receiver waits after the last alert for duplicates")
    args = parser.parse_args()
    if args.role == "receive":
        asyncio.run(receive())
    elif args.role == "scenario":
        quiet_logging()
        [(kind, size)] = args.receivers
        emit(asyncio.run(scenario(kind, size, args.events, args.rate, args.backlog,
                                  args.outage, args.backoff_initial, args.timeout,
                                  args.settle)))
    else:
        emit(orchestrate(args))


if __name__ == "__main__":
    main()
