"""Webhook delivery: backoff, dead letters, Retry-After, independence, signatures, formats."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog

from tests.alerts.receiver import Recorder, Request, serving, wait_until
from tests.daemon import free_port
from virtmon.alerts import formats
from virtmon.alerts.delivery import QUEUE_LOOK, Target, retry_after_seconds
from virtmon.alerts.metrics import alert_families
from virtmon.alerts.model import Alert, Notification
from virtmon.alerts.store import AlertStore
from virtmon.config import Receiver


def receiver(url: str, **kw: Any) -> Receiver:
    """A receiver with fast backoff for tests."""
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("timeout", 2.0)
    return Receiver(name=kw.pop("name", "r"), kind=kw.pop("kind", "json"), urls=(url,), **kw)


def enqueue(store: AlertStore, targets: Sequence[tuple[str, str]], count: int,
            resolved: bool = False) -> list[Notification]:
    """``count`` firing (or resolved) alerts of distinct domains, queued for the targets."""
    now = time.time()
    alerts = [Alert(rule="Crash", labels={"alertname": "Crash", "domain": f"d{i}",
                                          "severity": "critical"},
                    annotations={"summary": f"d{i} crashed"}, state="firing",
                    starts_at=now - 10) for i in range(count)]
    if resolved:
        alerts = [a.resolved(now) for a in alerts]
    notes = [Notification.of(a, now) for a in alerts]
    store.apply(alerts, notes, targets, now)
    return notes


@asynccontextmanager
async def delivering(*targets: Target) -> AsyncIterator[None]:
    """Run delivery tasks for the body of a ``with``."""
    async with anyio.create_task_group() as group:
        for target in targets:
            group.start_soon(target.run)
        yield
        group.cancel_scope.cancel()


@pytest.fixture
def store(tmp_path: Path) -> AsyncIterator[AlertStore]:
    """An alert store in a fresh database."""
    opened = AlertStore(tmp_path / "virtmon.db")
    yield opened  # type: ignore[misc]
    opened.close()


def keys(requests: list[Request]) -> list[str]:
    """The Idempotency-Key header of each request."""
    return [r.headers[formats.IDEMPOTENCY_HEADER] for r in requests]


async def test_dead_receiver_then_alive_gets_every_alert_once_with_backoff(
        store: AlertStore) -> None:
    """Connection refused for 2 s (retries spaced by backoff), then up: each key exactly once."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    target = Target(receiver(url, batch_size=1, backoff_initial=0.2), url, store, "hv1")
    notes = enqueue(store, [("r", url)], 3)
    started = time.monotonic()
    async with delivering(target):
        await wait_until(lambda: target.outcomes["error"] >= 2)  # refused, and retried
        elapsed = time.monotonic() - started
        # 0.2 s doubling with jitter: the k-th retry comes at least 0.1 x (2^k - 1) s after the
        # first attempt, so a handful in the time that passed (however long a loaded machine
        # made it), not a busy loop.
        assert target.outcomes["error"] <= 1 + math.log2(elapsed / 0.1 + 1), \
            (target.outcomes, elapsed)
        # Each attempt is stored; the row is marked in a thread before the outcome is counted,
        # so the two may differ for a moment while an attempt is recorded.
        await wait_until(lambda: store.due("r", url, 10)[0].attempts == target.outcomes["error"])
        async with serving(Recorder(), port) as rec:
            # The head row may be backing off for a few seconds more: the doubling goes on.
            await rec.wait_for(lambda: len(rec.requests) >= 3, 30)
            await wait_until(lambda: target.outcomes["delivered"] == 3)
    assert sorted(keys(rec.requests)) == sorted(n.key for n in notes)  # each once, in order
    assert keys(rec.requests) == [n.key for n in notes]
    assert {row.state for row in store.rows()} == {"delivered"}


async def test_4xx_is_a_dead_letter_kept_and_retryable(store: AlertStore) -> None:
    """400 dead-letters the row after one request; retry_dead sends it again. The control: a
    503 in its place is tried again within the same wait."""
    status = {"code": 400}
    no_retry_within = 0.5  # ten times the 0.05 s backoff
    async with serving(Recorder(lambda _r: (status["code"], {}, 0.0))) as rec:
        target = Target(receiver(rec.url), rec.url, store, "hv1")
        enqueue(store, [("r", rec.url)], 1)
        async with delivering(target):
            await wait_until(lambda: target.outcomes["dead"] == 1)
            await anyio.sleep(no_retry_within)  # dead means no retry
            assert len(rec.requests) == 1 and target.outcomes["dead"] == 1
            [dead] = store.rows("dead")
            assert dead.last_error is not None and dead.last_error.startswith("HTTP 400")
            status["code"] = 204
            assert store.retry_dead(None, time.time()) == (1, 0)
            target.kick()
            await wait_until(lambda: target.outcomes["delivered"] == 1)
            assert len(rec.requests) == 2 and store.rows("dead") == []
            status["code"] = 503
            [control] = enqueue(store, [("r", rec.url)], 1, resolved=True)
            target.kick()
            await wait_until(lambda: control.key in keys(rec.requests))
            await wait_until(lambda: keys(rec.requests).count(control.key) >= 2,
                             no_retry_within)


async def test_429_honours_retry_after_and_5xx_and_408_are_retried(store: AlertStore) -> None:
    """429 Retry-After: 1 waits a second; 503 and 408 are retried with backoff; then 200."""
    answers = [(429, {"Retry-After": "1"}, 0.0), (503, {}, 0.0), (408, {}, 0.0)]
    async with serving(Recorder(lambda r: answers.pop(0) if answers else (200, {}, 0.0))) \
            as rec:
        target = Target(receiver(rec.url, backoff_initial=0.01), rec.url, store, "hv1")
        enqueue(store, [("r", rec.url)], 1)
        with structlog.testing.capture_logs() as logs:
            async with delivering(target):
                await wait_until(lambda: target.outcomes["delivered"] == 1, 30)
    times = [r.time for r in rec.requests]
    assert len(times) == 4
    assert times[1] - times[0] >= 0.95  # Retry-After, not the 10 ms backoff
    # The delay each retry was given, as the target logged it: the wait between two requests
    # would also hold the response, the database write and the loop's lag on a loaded machine.
    [after_429, after_503, after_408] = [
        e["retry_in"] for e in logs if e["event"] == "virtmon.webhook.not_delivered"]
    assert after_429 == 1.0  # Retry-After
    assert 0.01 <= after_503 <= 0.02 and 0.02 <= after_408 <= 0.04  # 10 ms doubling, jitter
    assert len(set(keys(rec.requests))) == 1  # the same idempotency key on every attempt
    assert target.outcomes == {"rate_limited": 1, "failed": 2, "delivered": 1}


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After is delta-seconds or an HTTP date."""
    assert retry_after_seconds("120", 0.0) == 120.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert retry_after_seconds("soon", 0.0) is None


async def test_a_hung_receiver_delays_no_other(store: AlertStore) -> None:
    """One URL that never answers: the other receiver's alerts arrive while its request hangs."""
    async with serving(Recorder(lambda _r: (200, {}, 120.0))) as hung, \
            serving(Recorder()) as fine:
        slow = Target(receiver(hung.url, name="hung", timeout=60.0), hung.url, store, "hv1")
        fast = Target(receiver(fine.url, name="fine"), fine.url, store, "hv1")
        enqueue(store, [("hung", hung.url), ("fine", fine.url)], 2)
        async with delivering(slow, fast):
            await hung.wait_for(lambda: len(hung.requests) == 1, 20)
            await fine.wait_for(lambda: fast.outcomes["delivered"] == 2, 20)
            # The hung request has no outcome yet (it times out only after 60 s): the other
            # receiver did not wait for it.
            assert slow.outcomes == {}


async def test_signature_verifies_as_the_docs_show(store: AlertStore, tmp_path: Path) -> None:
    """The X-Virtmon-Signature header verifies with the shared secret, and fails otherwise."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret\n")
    async with serving(Recorder()) as rec:
        target = Target(receiver(rec.url, hmac_secret_file=str(secret_file)), rec.url, store,
                        "hv1")
        enqueue(store, [("r", rec.url)], 1)
        async with delivering(target):
            await rec.wait_for(lambda: len(rec.requests) == 1)
    got = rec.requests[0]
    header = got.headers[formats.SIGNATURE_HEADER]
    # What docs/alerts.md tells a receiver to do:
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(b"s3cret", fields["t"].encode() + b"." + got.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"])
    assert abs(time.time() - int(fields["t"])) < 60
    assert formats.verify(b"s3cret", header, got.body, time.time())
    assert not formats.verify(b"wrong", header, got.body, time.time())
    assert not formats.verify(b"s3cret", header, got.body + b" ", time.time())
    assert not formats.verify(b"s3cret", header, got.body, time.time() + 3600)


async def test_payload_shapes_of_each_kind(store: AlertStore) -> None:
    """json (schema v1), CloudEvents 1.0 (structured and batch) and Alertmanager v2 bodies."""
    async with serving(Recorder()) as rec:
        targets = [Target(receiver(rec.url + "/" + kind, name=kind, kind=kind,
                                   batch_size=batch), rec.url + "/" + kind, store, "hv1",
                          "http://hv1:9786/metrics")
                   for kind, batch in (("json", 64), ("cloudevents", 1), ("alertmanager", 64))]
        batch = Target(receiver(rec.url + "/batch", name="batch", kind="cloudevents"),
                       rec.url + "/batch", store, "hv1")
        notes = enqueue(store, [(t.receiver.name, t.url) for t in [*targets, batch]], 2)
        async with delivering(*targets, batch):
            await rec.wait_for(lambda: len(rec.requests) >= 5)
    by_path: dict[str, list[Request]] = {}
    for r in rec.requests:
        by_path.setdefault(r.path, []).append(r)
    doc = by_path["/hook/json"][0].json()
    assert doc["version"] == "1" and doc["source"] == "virtmon" and doc["host"] == "hv1"
    assert [a["key"] for a in doc["alerts"]] == [n.key for n in notes]
    first = doc["alerts"][0]
    assert set(first) == {"key", "status", "fingerprint", "rule", "labels", "annotations",
                          "starts_at", "ends_at"}
    assert first["status"] == "firing" and first["ends_at"] is None
    assert first["starts_at"].endswith("Z")
    single = by_path["/hook/cloudevents"]
    assert len(single) == 2
    assert single[0].headers["Content-Type"].startswith("application/cloudevents+json")
    event = single[0].json()
    assert event["specversion"] == "1.0" and event["id"] == notes[0].key
    assert event["type"] == "io.virtmon.alert.firing" and event["source"] == "virtmon://hv1"
    assert event["subject"] == "d0" and event["data"]["rule"] == "Crash"
    assert {"time", "datacontenttype"} <= set(event)
    [batched] = by_path["/hook/batch"]
    assert batched.headers["Content-Type"].startswith("application/cloudevents-batch+json")
    assert [e["id"] for e in batched.json()] == [n.key for n in notes]
    [am] = by_path["/hook/alertmanager/api/v2/alerts"]
    alerts = am.json()
    assert [a["labels"]["domain"] for a in alerts] == ["d0", "d1"]
    assert set(alerts[0]) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert alerts[0]["generatorURL"] == "http://hv1:9786/metrics"


async def test_rate_limit_spaces_requests(store: AlertStore) -> None:
    """rate_limit = 5 per second: five single-alert requests take at least 0.8 s."""
    async with serving(Recorder()) as rec:
        target = Target(receiver(rec.url, rate_limit=5.0, batch_size=1), rec.url, store, "hv1")
        enqueue(store, [("r", rec.url)], 5)
        async with delivering(target):
            await rec.wait_for(lambda: len(rec.requests) == 5)
    assert rec.requests[-1].time - rec.requests[0].time >= 0.75


async def test_rows_older_than_max_age_expire(store: AlertStore) -> None:
    """A row that could not be delivered within max_age is given up and counted."""
    url = f"http://127.0.0.1:{free_port()}/"
    target = Target(receiver(url, max_age=0.5), url, store, "hv1")
    enqueue(store, [("r", url)], 1)
    async with delivering(target):
        await wait_until(lambda: target.outcomes["expired"] == 1, 35)
    assert [r.state for r in store.rows()] == ["expired"]


async def test_metrics_count_outcomes_depth_and_age(store: AlertStore, tmp_path: Path) -> None:
    """virtmon_webhook_* families report deliveries by outcome, queue depth and oldest age."""
    from virtmon.alerts.engine import AlertEngine
    from virtmon.events.journal import Journal

    url = f"http://127.0.0.1:{free_port()}/"
    # A backoff far longer than the test: one attempt, however slow the machine.
    target = Target(receiver(url, backoff_initial=300.0), url, store, "hv1")
    enqueue(store, [("r", url)], 3)
    journal = Journal(tmp_path / "virtmon.db")
    engine = AlertEngine([], store, journal, [("r", url)], "hv1")
    async with delivering(target):
        await wait_until(lambda: target.outcomes["error"] == 3 and target.depth == 3)
    # 100 s after the rows were queued, however long the wait above took.
    queued = min(row.created_at for row in store.rows())
    families = {f.name: f for f in alert_families(engine, [target], queued + 100)}
    engine.close()
    journal.close()
    assert (("r", "error"), 3) in families["virtmon_webhook_deliveries_total"].samples
    assert families["virtmon_webhook_queue_depth"].samples == [(("r",), 3)]
    [(_labels, age)] = families["virtmon_webhook_oldest_pending_age_seconds"].samples
    assert age == pytest.approx(100.0)
    assert families["virtmon_webhook_attempts_total"].samples == [(("r",), 1)]


async def test_a_resend_round_reaches_every_firing_alert_past_a_thousand(
        store: AlertStore) -> None:
    """With 1,011 firing alerts, one re-send round to Alertmanager carries all 1,011 (it read
    at most 1,000 and let the rest expire there while they were still firing)."""
    async with serving(Recorder()) as rec:
        target = Target(receiver(rec.url, kind="alertmanager", batch_size=500,
                                 resend_interval=0.5), rec.url, store, "hv1")
        enqueue(store, [("r", rec.url)], 1011)
        async with delivering(target):
            await wait_until(lambda: target.outcomes["delivered"] == 1011, 30)
            await wait_until(lambda: target.outcomes["resent"] >= 3, 30)  # a whole round
        sent = [r.json() for r in rec.requests]
    first_round, resends = sent[:3], sent[3:6]
    assert sum(len(batch) for batch in first_round) == 1011
    assert {a["labels"]["domain"] for batch in resends for a in batch} == {
        f"d{i}" for i in range(1011)}


async def test_a_retry_sends_the_first_attempts_rows_under_the_same_key(
        store: AlertStore) -> None:
    """A batch that failed is retried with exactly its rows and its Idempotency-Key; rows queued
    while it backed off go in the next request (the batch grew, and the key changed, before)."""
    answers = iter([503])
    async with serving(Recorder(lambda _r: (next(answers, 200), {}, 0.0))) as rec:
        target = Target(receiver(rec.url, batch_size=10, backoff_initial=0.5), rec.url, store,
                        "hv1")
        [first] = enqueue(store, [("r", rec.url)], 1)
        async with delivering(target):
            await rec.wait_for(lambda: len(rec.requests) == 1)
            later = enqueue(store, [("r", rec.url)], 2)
            target.kick()
            await wait_until(lambda: target.outcomes["delivered"] == 3)
    sent = [[a["key"] for a in r.json()["alerts"]] for r in rec.requests]
    assert sent == [[first.key], [first.key], [n.key for n in later]]
    assert keys(rec.requests) == [first.key, first.key, formats.batch_key(later)]


async def test_retrying_dead_letters_drops_a_firing_its_resolve_followed(
        store: AlertStore) -> None:
    """A firing dead-lettered, then its resolve delivered: retrying every dead letter marks the
    firing superseded and sends nothing (it revived the resolved alert at the receiver)."""
    answers = iter([400])
    async with serving(Recorder(lambda _r: (next(answers, 204), {}, 0.0))) as rec:
        target = Target(receiver(rec.url, batch_size=1), rec.url, store, "hv1")
        [firing] = enqueue(store, [("r", rec.url)], 1)
        async with delivering(target):
            await wait_until(lambda: target.outcomes["dead"] == 1)
            [resolved] = enqueue(store, [("r", rec.url)], 1, resolved=True)
            target.kick()
            await wait_until(lambda: target.outcomes["delivered"] == 1)
            assert store.retry_dead(None, time.time()) == (0, 1)
            # A later alert goes out after anything the retry queued: once it arrived, a
            # revived firing would have arrived before it.
            [control] = enqueue(store, [("r", rec.url)], 1)  # same labels: a new transition
            target.kick()
            await wait_until(lambda: target.outcomes["delivered"] == 2)
    assert keys(rec.requests) == [firing.key, resolved.key, control.key]
    assert [r.state for r in store.rows()] == ["delivered", "delivered", "superseded"]


async def test_cloudevents_batch_mode_follows_batch_size_not_the_request(
        store: AlertStore) -> None:
    """A CloudEvents receiver with batch_size 10 gets batch mode even for a single event, as the
    docs say (it got a structured event whenever a request held one)."""
    async with serving(Recorder()) as rec:
        target = Target(receiver(rec.url, kind="cloudevents", batch_size=10), rec.url, store,
                        "hv1")
        [note] = enqueue(store, [("r", rec.url)], 1)
        async with delivering(target):
            await rec.wait_for(lambda: len(rec.requests) == 1)
    [request] = rec.requests
    assert request.headers["Content-Type"].startswith("application/cloudevents-batch+json")
    assert [e["id"] for e in request.json()] == [note.key]


def test_backoff_stays_at_its_cap_after_thousands_of_attempts(store: AlertStore) -> None:
    """The 1,025th attempt's backoff is backoff_max (2.0 ** 1024 overflowed and the delivery
    task crashed in a loop, every 5 s)."""
    target = Target(receiver("http://127.0.0.1:1/", backoff_max=30.0), "http://127.0.0.1:1/",
                    store, "hv1")
    assert target.backoff(1) <= 0.05  # backoff_initial, times the jitter
    for attempts in (60, 1025, 10**6):
        assert 15.0 <= target.backoff(attempts) <= 30.0  # backoff_max, times the jitter


async def test_alerts_sent_one_by_one_scan_the_queue_once_per_look_not_per_request(
    store: AlertStore,
) -> None:
    """Alerts queued one at a time are each sent as they come, and the expiry and count scans of
    the target's queue run once per QUEUE_LOOK, not before each request (an empty queue after a
    request is known to be empty without a scan)."""
    calls: Counter[str] = Counter()
    for name in ("due", "expire", "queue_stats"):
        method = getattr(store, name)

        def counted(*args: Any, _method: Any = method, _name: str = name) -> Any:
            calls[_name] += 1
            return _method(*args)

        setattr(store, name, counted)
    async with serving(Recorder()) as rec:
        target = Target(receiver(rec.url, batch_size=1), rec.url, store, "hv1")
        async with delivering(target):
            started = time.monotonic()
            for i in range(20):
                now = time.time()
                alert = Alert(rule="Crash", labels={"alertname": "Crash", "domain": f"d{i}"},
                              annotations={}, state="firing", starts_at=now)
                store.apply([alert], [Notification.of(alert, now)], [("r", rec.url)], now)
                target.kick()
                await rec.wait_for(lambda i=i: len(rec.requests) == i + 1)
            looks = 1 + (time.monotonic() - started) / QUEUE_LOOK
    assert calls["due"] >= 20
    assert calls["expire"] <= looks + 1 and calls["queue_stats"] <= looks + 1, calls
