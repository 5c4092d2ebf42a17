"""Through the whole daemon: a receiver down for a real 60 s, and 10,000 events in one burst.

The outage test is the suite's one long test (about 70 s), marked ``slow``: ``make test`` runs
it; ``pytest -m "not slow"`` leaves it out while iterating.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.alerts.control_env import URI, alert_daemon, receiver
from tests.alerts.receiver import Recorder, serving, wait_until
from virtmon.events.bus import INGEST_SINK
from virtmon.events.model import Event

OUTAGE = 60.0
# How long a re-sent alert is given to show up as a duplicate (the control shows a new alert
# arrives within it).
DUPLICATE_WITHIN = 2.0


def rss_mib() -> float:
    """This process's resident set (the daemon runs in it) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def reserved_port() -> socket.socket:
    """A loopback port held bound but not listening: connections are refused until released."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.slow
async def test_receiver_down_60s_gets_every_alert_once(short_tmp: Path) -> None:
    """A receiver refusing connections for 60 s, then back: every alert arrives, each key once."""
    held = reserved_port()
    port = held.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    hook = receiver("hook", url, batch_size=8, backoff_initial=0.5, backoff_max=4.0)
    try:
        async with alert_daemon(short_tmp, [hook]) as env:
            began = time.monotonic()
            for i in range(20):
                env.crash(f"early-{i}")
            await asyncio.sleep(OUTAGE / 2)
            for i in range(20):
                env.crash(f"late-{i}")
            for i in range(10):
                env.start(f"early-{i}")
            # Retried all along: the oldest row is tried at least five times before the end.
            # (One answer's queue depth and rows are two reads: the engine may store rows between
            # them, so both must show the 50.)
            while True:
                outbox = await env.call("alerts.outbox", receiver="hook", limit=1000)
                head = min(outbox["rows"], key=lambda r: r["id"])
                if (len(outbox["rows"]) == outbox["queues"][0]["pending"] == 50
                        and head["attempts"] >= 5):
                    break
                assert time.monotonic() - began < OUTAGE * 0.9, (
                    f"{len(outbox['rows'])} rows, the oldest tried {head['attempts']} times")
                await asyncio.sleep(0.5)
            assert outbox["queues"][0]["pending"] == 50 and "Connect" in head["last_error"]
            expected = {r["key"] for r in outbox["rows"]}
            await asyncio.sleep(OUTAGE - (time.monotonic() - began))
            held.close()
            rec = Recorder()
            async with serving(rec, port):
                back = time.monotonic()

                def keys() -> Counter[str]:
                    return Counter(a["key"] for r in rec.requests for a in r.json()["alerts"])

                await rec.wait_for(lambda: set(keys()) >= expected, 30)
                caught_up = time.monotonic() - back
                await asyncio.sleep(DUPLICATE_WITHIN)  # room for a duplicate to show up
                assert set(keys()) == expected and max(keys().values()) == 1
                statuses = Counter(a["status"] for r in rec.requests for a in r.json()["alerts"])
                assert statuses == {"firing": 40, "resolved": 10}
                # The control: an alert raised now is delivered within the same wait.
                env.crash("after")
                await rec.wait_for(lambda: len(keys()) == len(expected) + 1, DUPLICATE_WITHIN)
                for request in rec.requests:  # the header: the key, or a batch's hash of keys
                    batch = [a["key"] for a in request.json()["alerts"]]
                    assert request.headers["Idempotency-Key"] == (batch[0] if len(batch) == 1 else
                                                                  hashlib.sha256(",".join(
                                                                      batch).encode()
                                                                  ).hexdigest()[:32])
                left = await env.call("alerts.outbox", receiver="hook")
                assert left["rows"] == [] and left["queues"][0]["pending"] == 0
    finally:
        held.close()
    print(f"after a {OUTAGE:.0f} s outage: 50 alerts in {len(rec.requests)} requests, "
          f"caught up {caught_up:.1f} s after the receiver came back, head row tried "
          f"{head['attempts']} times while down")


async def test_10000_events_in_a_burst_lose_no_alert_and_memory_stays_bounded(
    short_tmp: Path
) -> None:
    """10,000 events into the daemon's bus: 10,000 alerts stored and enqueued, RSS < +100 MiB."""
    held = reserved_port()  # a receiver that is down: every row stays queued
    hook = receiver("hook", f"http://127.0.0.1:{held.getsockname()[1]}/hook",
                    backoff_initial=300.0, backoff_max=300.0)
    try:
        async with alert_daemon(short_tmp, [hook]) as env:
            store = env.daemon.alerts.store
            bus = env.daemon.bus

            def idle() -> bool:
                # Every event accepted so far is journaled (a fresh journal numbers from 1), so
                # the ingest queue is empty and takes the whole burst: as many as it holds.
                return bus.published_seq == sum(bus.received.values()) - bus.dropped[INGEST_SINK]

            await wait_until(idle, 30)  # nothing runs between this and the burst below
            before = rss_mib()
            began = time.monotonic()
            accepted = [env.daemon.bus.publish(event) for event in _crashes(10_000)]
            assert all(accepted)
            peak = before

            def stored() -> bool:
                nonlocal peak
                peak = max(peak, rss_mib())
                return env.daemon.alerts.engine.notifications["firing"] >= 10_000

            await wait_until(stored, 120)
            took = time.monotonic() - began
            alerts = await asyncio.to_thread(store.alerts, "firing", 20_000)
            rows = await asyncio.to_thread(store.rows, None, "hook", 20_000)
            assert len({a.labels["domain"] for a in alerts}) == 10_000
            assert len(rows) == 10_000
            assert {r.notification.fingerprint for r in rows} == {a.fingerprint for a in alerts}
            growth = max(peak, rss_mib()) - before
            assert growth < 100, f"RSS grew by {growth:.0f} MiB"
    finally:
        held.close()
    print(f"10,000 events -> 10,000 alerts and outbox rows in {took:.2f} s; "
          f"RSS +{growth:.1f} MiB")


def _crashes(count: int) -> list[Event]:
    now = time.time()
    return [Event(time=now, uri=URI, kind="lifecycle", name="stopped", detail="crashed",
                  domain=f"burst-{i:05d}") for i in range(count)]
