"""The engine: lifecycle, fingerprint, de-duplication, restarts, for/resolve_after, thresholds."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.alerts.receiver import wait_until
from virtmon.alerts.engine import AlertEngine, Changes
from virtmon.alerts.model import fingerprint
from virtmon.alerts.ruleconfig import parse_rules
from virtmon.alerts.rules import Rule
from virtmon.alerts.store import AlertStore
from virtmon.events.journal import Journal
from virtmon.events.model import Event
from virtmon.exposition.family import MetricFamily

TARGETS = [("am", "http://127.0.0.1:1"), ("am", "http://127.0.0.1:2")]
CRASH = {"name": "Crash", "severity": "critical", "summary": "{domain} crashed ({detail})",
         "match": {"kind": "lifecycle", "name": "stopped", "detail": "failed"},
         "resolve": {"kind": "lifecycle", "name": "started"}}


def rules(*raw: dict[str, Any]) -> list[Rule]:
    """Parsed rules (the test fails on a problem)."""
    problems: list[str] = []
    parsed = parse_rules(list(raw), "rules", problems)
    assert problems == []
    return [r for r in parsed.values() if r is not None]


def ev(name: str, detail: str | None, domain: str | None = "web", kind: str = "lifecycle",
       at: float | None = None) -> Event:
    """An unnumbered event."""
    return Event(time=time.time() if at is None else at, uri="qemu:///system", kind=kind,
                 name=name, detail=detail, domain=domain)


def outbox(path: Path) -> list[tuple[Any, ...]]:
    """(receiver, url, status, rule, state) of every outbox row of a database, in order."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT receiver, url, body, state FROM outbox ORDER BY id")
        return [(r, u, json.loads(b)["status"], json.loads(b)["rule"], s)
                for r, u, b, s in rows.fetchall()]


class Rig:
    """A journal, a store and an engine on one database file, the engine running."""

    def __init__(self, path: Path, engine: AlertEngine, journal: Journal) -> None:
        self.path = path
        self.engine = engine
        self.journal = journal

    def publish(self, *events: Event) -> None:
        """Journal events and tell the engine (what the bus does)."""
        for numbered in self.journal.append(list(events)):
            self.engine.on_event(numbered)

    def outbox(self) -> list[tuple[Any, ...]]:
        """(receiver, url, status, rule, state) of every outbox row, in order."""
        return outbox(self.path)

    async def settle(self) -> None:
        """Wait until the engine has handled everything journaled (its last_seq moves after the
        batch is stored and its active alerts are updated)."""
        await wait_until(lambda: self.engine.last_seq == self.journal.last_seq, 10)


@asynccontextmanager
async def rig(path: Path, rule_list: list[Rule], **kw: Any) -> AsyncIterator[Rig]:
    """Run an engine for the body of a ``with``; close everything after."""
    journal = Journal(path)
    store = AlertStore(path)
    engine = AlertEngine(rule_list, store, journal, TARGETS, "hv1", **kw)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(engine.run)
            await engine.ready.wait()
            yield Rig(path, engine, journal)
            group.cancel_scope.cancel()
    finally:
        store.close()
        journal.close()


async def test_fire_dedup_resolve_and_fire_again(tmp_path: Path) -> None:
    """Repeats of a firing condition are one alert; resolve and re-fire each notify every URL."""
    async with rig(tmp_path / "v.db", rules(CRASH)) as r:
        r.publish(ev("stopped", "failed"), ev("stopped", "failed"), ev("stopped", "failed"))
        await r.settle()
        [alert] = r.engine.active.values()
        assert alert.count == 3 and alert.state == "firing"
        assert alert.annotations["summary"] == "web crashed (failed)"
        assert [row[2] for row in r.outbox()] == ["firing", "firing"]  # one per URL
        r.publish(ev("started", "booted", domain="other"))  # another domain: no effect
        await r.settle()
        assert len(r.engine.active) == 1
        r.publish(ev("started", "booted"))
        await r.settle()
        assert r.engine.active == {}
        r.publish(ev("stopped", "failed"))
        await r.settle()
        statuses = [row[2] for row in r.outbox()]
        assert statuses == ["firing", "firing", "resolved", "resolved", "firing", "firing"]
        keys = AlertStore(r.path).rows()
        assert len({row.notification.key for row in keys}) == 3  # one key per transition


def test_fingerprint_is_the_sorted_label_set() -> None:
    """The fingerprint depends on the labels only, not their order, and differs per domain."""
    a = fingerprint({"alertname": "Crash", "domain": "web"})
    assert a == fingerprint({"domain": "web", "alertname": "Crash"})
    assert a != fingerprint({"alertname": "Crash", "domain": "db"})
    assert len(a) == 16


async def test_state_survives_a_restart_and_missed_events_are_replayed(tmp_path: Path) -> None:
    """A firing alert outlives the engine; events journaled while it was down are handled."""
    path = tmp_path / "v.db"
    async with rig(path, rules(CRASH)) as r:
        r.publish(ev("stopped", "failed"))
        await r.settle()
    # virtmon "crashed" after journaling these two, before the engine saw them:
    journal = Journal(path)
    journal.append([ev("started", "booted"), ev("stopped", "failed", domain="db")])
    journal.close()
    async with rig(path, rules(CRASH)) as r:
        await r.settle()
        assert {a.labels["domain"] for a in r.engine.active.values()} == {"db"}
        assert [row[2] for row in r.outbox()] == ["firing"] * 2 + ["resolved"] * 2 + \
            ["firing"] * 2


async def test_an_event_the_engine_was_not_told_of_is_read_from_the_journal(
        tmp_path: Path) -> None:
    """An event journaled without reaching the engine's listener (a gap in the events it keeps)
    is read from the journal before the kept event after it: none is skipped."""
    async with rig(tmp_path / "v.db", rules(CRASH)) as r:
        r.publish(ev("started", "booted"))
        await r.settle()  # the engine has caught up and waits to be told of the next event
        r.journal.append([ev("stopped", "failed", domain="unheard")])
        r.publish(ev("stopped", "failed", domain="heard"))
        await r.settle()
        assert {a.labels["domain"] for a in r.engine.active.values()} == {"unheard", "heard"}


async def test_events_that_changed_nothing_change_nothing_when_read_again_after_a_restart(
        tmp_path: Path) -> None:
    """Events that changed nothing may be stored as handled only with a later commit; an event
    that changes something right after them is stored at once, and a restart that reads the
    others again neither loses an alert nor sends one again."""
    path = tmp_path / "v.db"
    async with rig(path, rules(CRASH)) as r:
        r.publish(ev("stopped", "failed"))
        await r.settle()
        r.publish(*[ev("started", "booted", domain=f"other-{i}") for i in range(50)])
        await r.settle()
        r.publish(ev("stopped", "failed", domain="db"))
        await r.settle()
        r.publish(*[ev("started", "booted", domain=f"more-{i}") for i in range(50)])
        await r.settle()
        assert {a.labels["domain"] for a in r.engine.active.values()} == {"web", "db"}
    async with rig(path, rules(CRASH)) as r:
        await r.settle()
        assert {a.labels["domain"] for a in r.engine.active.values()} == {"web", "db"}
        assert [row[2] for row in r.outbox()] == ["firing"] * 4


async def test_for_cancels_a_short_outage_and_fires_a_long_one(tmp_path: Path) -> None:
    """Connection lost and back within `for`: nothing sent; lost for longer: fires, resolves."""
    lost = {"name": "Lost", "match": {"kind": "connection", "name": "lost"},
            "resolve": {"kind": "connection", "name": "restored"}, "same": ["uri"], "for": 2.0}
    async with rig(tmp_path / "v.db", rules(lost)) as r:
        r.publish(ev("lost", "eof", None, "connection"), ev("restored", None, None, "connection"))
        await r.settle()
        await anyio.sleep(2.5)
        assert r.outbox() == [] and r.engine.active == {}
        r.publish(ev("lost", "keepalive", None, "connection"))
        await r.settle()
        assert [a.state for a in r.engine.active.values()] == ["pending"]
        await wait_until(lambda: len(r.outbox()) == 2, 10)
        r.publish(ev("restored", None, None, "connection"))
        await r.settle()
        assert [row[2] for row in r.outbox()] == ["firing", "firing", "resolved", "resolved"]


async def test_one_shot_alerts_resolve_after_resolve_after(tmp_path: Path) -> None:
    """A watchdog alert has no resolving event: it resolves resolve_after seconds later."""
    dog = {"name": "Dog", "match": {"kind": "watchdog"}, "resolve_after": 0.3}
    async with rig(tmp_path / "v.db", rules(dog)) as r:
        r.publish(ev("reset", None, kind="watchdog"))
        await wait_until(lambda: [row[2] for row in r.outbox()] == ["firing"] * 2 +
                         ["resolved"] * 2, 5)


def families(depth: float, clients: float = 1, clients_max: float = 100) -> list[MetricFamily]:
    """Admin families of one cycle."""
    queue = MetricFamily("libvirt_daemon_threadpool_job_queue_depth", "gauge", "", ("server",))
    queue.add(("libvirtd",), depth)
    queue.add(("admin",), 0)
    now = MetricFamily("libvirt_daemon_clients", "gauge", "", ("server",))
    now.add(("libvirtd",), clients)
    top = MetricFamily("libvirt_daemon_clients_max", "gauge", "", ("server",))
    top.add(("libvirtd",), clients_max)
    return [queue, now, top]


def test_threshold_rules_fire_after_n_cycles_and_resolve(tmp_path: Path) -> None:
    """A series beyond its threshold fires on the Nth cycle, per series; back below resolves."""
    rule_list = rules(
        {"name": "Queue", "metric": "libvirt_daemon_threadpool_job_queue_depth", "op": ">",
         "value": 0, "for_cycles": 3, "summary": "{labels[server]}: {value:.0f} queued"},
        {"name": "Clients", "metric": "libvirt_daemon_clients",
         "divide_by": "libvirt_daemon_clients_max", "op": ">=", "value": 0.9})
    engine = AlertEngine(rule_list, AlertStore(tmp_path / "v.db"), Journal(tmp_path / "v.db"),
                         TARGETS, "hv1")

    def cycle(fams: list[MetricFamily]) -> Changes:
        changes = Changes()
        engine.evaluate_thresholds(fams, changes)
        for alert in changes.alerts.values():  # what _commit does to the mirror
            if alert.active:
                engine.active[alert.fingerprint] = alert
            else:
                engine.active.pop(alert.fingerprint, None)
        return changes

    assert not cycle(families(2)).notifications
    assert not cycle(families(2)).notifications
    fired = cycle(families(5, clients=95)).notifications
    assert sorted(n.rule for n in fired) == ["Clients", "Queue"]
    queue = next(n for n in fired if n.rule == "Queue")
    assert queue.labels == {"alertname": "Queue", "severity": "warning", "instance": "hv1",
                            "server": "libvirtd"}
    assert queue.annotations["summary"] == "libvirtd: 5 queued"
    assert not cycle(families(5, clients=95)).notifications  # still firing: de-duplicated
    assert not cycle([]).notifications  # families absent (collector off): no change
    resolved = cycle(families(0, clients=95)).notifications
    assert [(n.rule, n.status) for n in resolved] == [("Queue", "resolved")]
    assert [(n.rule, n.status) for n in cycle(families(0, 10)).notifications] == [
        ("Clients", "resolved")]
    engine.close()
    engine.store.close()
    engine.journal.close()


def test_a_reading_carried_over_cycles_counts_once_towards_for_cycles(tmp_path: Path) -> None:
    """Admin families carried from one read over later cycles (read_at unchanged) neither fire
    a three-reading rule nor resolve it; three distinct readings beyond it fire it, and a new
    reading back within it resolves it."""
    engine = AlertEngine(rules(
        {"name": "Queue", "metric": "libvirt_daemon_threadpool_job_queue_depth", "op": ">",
         "value": 0, "for_cycles": 3, "summary": "{value:.0f} queued for {cycles}"}),
        AlertStore(tmp_path / "v.db"), Journal(tmp_path / "v.db"), TARGETS, "hv1")

    def cycle(depth: float, read_at: float) -> list[tuple[str, str]]:
        fams = families(depth)
        for family in fams:
            family.read_at = read_at
        changes = Changes()
        engine.evaluate_thresholds(fams, changes)
        for alert in changes.alerts.values():
            if alert.active:
                engine.active[alert.fingerprint] = alert
            else:
                engine.active.pop(alert.fingerprint, None)
        return [(n.status, n.annotations["summary"]) for n in changes.notifications]

    assert [cycle(4, 100.0) for _ in range(5)] == [[]] * 5  # one reading, five cycles
    assert cycle(4, 160.0) == [] and cycle(4, 160.0) == []
    assert cycle(4, 220.0) == [("firing", "4 queued for 3")]
    assert cycle(0, 220.0) == []  # carried: a changed value can only come with a new reading
    assert cycle(0, 280.0) == [("resolved", "4 queued for 3")]
    engine.close()
    engine.store.close()
    engine.journal.close()


async def test_outbox_and_alert_state_commit_together_or_not_at_all(tmp_path: Path) -> None:
    """When the outbox insert fails, neither the alert state nor the event position is stored."""
    path = tmp_path / "v.db"
    store = AlertStore(path)
    journal = Journal(path)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER no_outbox BEFORE INSERT ON outbox "
                   "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    engine = AlertEngine(rules(CRASH), store, journal, TARGETS, "hv1")
    engine.close()
    [event] = journal.append([ev("stopped", "failed")])
    changes = Changes()
    engine.handle_event(event, changes)
    assert changes.notifications
    with pytest.raises(sqlite3.IntegrityError):
        store.apply(list(changes.alerts.values()), changes.notifications, TARGETS, 1.0,
                    event.seq)
    assert store.alerts() == [] and store.last_seq() is None and store.rows() == []
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER no_outbox")
    assert store.apply(list(changes.alerts.values()), changes.notifications, TARGETS, 1.0,
                       event.seq) == 2
    # Handling the same event again (a replay after a crash) enqueues nothing twice.
    assert store.apply(list(changes.alerts.values()), changes.notifications, TARGETS, 1.0,
                       event.seq) == 0
    assert len(store.alerts()) == 1 and store.last_seq() == event.seq
    store.close()
    journal.close()


async def test_a_burst_of_10000_events_loses_no_alert(tmp_path: Path) -> None:
    """10,000 crash events on 10,000 domains: 10,000 alerts, 20,000 outbox rows, read in pages."""
    def crash(i: int) -> Event:
        return ev("stopped", "failed", domain=f"d{i:05d}")

    make: Callable[[int], Event] = crash
    async with rig(tmp_path / "v.db", rules(CRASH)) as r:
        started = time.monotonic()
        r.publish(*[make(i) for i in range(10_000)])
        await wait_until(lambda: r.engine.last_seq == r.journal.last_seq, 60)
        took = time.monotonic() - started
        assert len(r.engine.active) == 10_000
        assert len(r.outbox()) == 20_000
        print(f"10,000 events -> alerts + outbox in {took:.2f} s")


async def test_alerts_of_a_removed_rule_resolve_at_start(tmp_path: Path) -> None:
    """A firing alert whose rule left the configuration is resolved (and announced) at start."""
    path = tmp_path / "v.db"
    async with rig(path, rules(CRASH)) as r:
        r.publish(ev("stopped", "failed"))
        await r.settle()
    async with rig(path, []) as r:
        assert r.engine.active == {}
        assert [row[2] for row in r.outbox()] == ["firing"] * 2 + ["resolved"] * 2



async def test_a_release_interrupted_before_its_record_is_dropped_is_sent_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between enqueueing a release and dropping its silence record: one row per URL."""
    from virtmon.alerts.silences import Silences

    path = tmp_path / "v.db"
    silences = Silences(path)
    silence = silences.add(None, "web", 3600.0, "maintenance", time.time())

    def dies(_released: object) -> None:
        raise RuntimeError("killed after the outbox commit")

    with pytest.raises(BaseExceptionGroup):
        async with rig(path, rules(CRASH), silences=silences) as r:
            r.publish(ev("stopped", "failed"))
            await r.settle()
            assert r.outbox() == [] and len(r.engine.active) == 1
            monkeypatch.setattr(silences, "forget", dies)
            silences.end(silence.id, time.time())
            r.engine.wake()
            await anyio.sleep(10)  # the engine dies at once, which cancels this
    monkeypatch.undo()
    assert [row[2] for row in outbox(path)] == ["firing", "firing"]
    silences.close()
    restarted, store = Silences(path), AlertStore(path)
    assert restarted.released(store.active(), time.time())  # its record is still there
    store.close()
    async with rig(path, rules(CRASH), silences=restarted) as r:
        await wait_until(lambda: not restarted.released(list(r.engine.active.values()),
                                                        time.time()), 5)
        assert [row[2] for row in r.outbox()] == ["firing", "firing"]  # the key ignored it
    restarted.close()


QUEUE_RULE = {"name": "Queue", "metric": "libvirt_daemon_threadpool_job_queue_depth", "op": ">",
              "value": 0, "for_cycles": 1}


class GatedSamples(list[Any]):
    """Samples whose iteration waits for a gate: an evaluation that takes a while. ``entered``
    is set when the evaluation reaches them."""

    def __init__(self, items: list[Any], gate: threading.Event,
                 entered: threading.Event) -> None:
        super().__init__(items)
        self.gate = gate
        self.entered = entered

    def __iter__(self) -> Any:
        self.entered.set()
        self.gate.wait(10)
        return super().__iter__()


@pytest.mark.parametrize("reload_meanwhile", [False, True])
async def test_a_threshold_rule_removed_during_its_evaluation_leaves_no_alert(
    tmp_path: Path, reload_meanwhile: bool
) -> None:
    """A reload that removes a threshold rule while its evaluation runs: its result is dropped.
    Without the reload (the positive control) the same held evaluation raises the alert."""
    entered, gate, evaluated = threading.Event(), threading.Event(), threading.Event()
    async with rig(tmp_path / "v.db", rules(QUEUE_RULE)) as r:
        evaluate = r.engine.evaluate_thresholds

        def traced(*args: Any) -> Any:
            try:
                return evaluate(*args)
            finally:
                evaluated.set()

        r.engine.evaluate_thresholds = traced  # type: ignore[method-assign]
        slow = families(5)
        slow[0].samples = GatedSamples(slow[0].samples, gate, entered)
        r.engine.on_families(slow)
        await wait_until(entered.is_set, 5)  # the evaluation runs, held in its worker thread
        if reload_meanwhile:
            r.engine.use_rules([], 3600.0)
        gate.set()
        await wait_until(evaluated.is_set, 5)
        if not reload_meanwhile:
            await wait_until(lambda: len(r.engine.active) == 1, 5)
            return
        await anyio.sleep(0.5)  # its commit would follow at once; the control shows it does
        assert r.engine.active == {} and r.outbox() == []


async def test_a_release_and_a_threshold_resolve_leave_no_firing_unresolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A silence ends while the series drops below its threshold: every firing sent is resolved."""
    from virtmon.alerts.silences import Silences

    path = tmp_path / "v.db"
    silences = Silences(path)
    silence = silences.add("Queue", None, 3600.0, "maintenance", time.time())
    async with rig(path, rules(QUEUE_RULE), silences=silences) as r:
        r.engine.on_families(families(5))
        await wait_until(lambda: len(r.engine.active) == 1, 5)
        assert r.outbox() == []  # silenced
        entered, gate = threading.Event(), threading.Event()
        original = silences.released

        def slow_released(firing: Any, now: float) -> Any:
            found = original(firing, now)
            if found:
                entered.set()
                gate.wait(10)
            return found

        monkeypatch.setattr(silences, "released", slow_released)
        silences.end(silence.id, time.time())
        r.engine.wake()
        await wait_until(entered.is_set, 5)
        r.engine.on_families(families(0))  # below the threshold while the release is decided
        # The threshold task has evaluated and waits for the commit the release holds.
        await wait_until(lambda: r.engine._commit_lock.statistics().tasks_waiting == 1, 5)
        gate.set()
        await wait_until(lambda: not r.engine.active and len(r.outbox()) >= 4, 5)
        statuses = [row[2] for row in r.outbox()]
        assert statuses == ["firing", "firing", "resolved", "resolved"]
    silences.close()


async def test_a_threshold_alert_is_released_when_its_silence_expires(tmp_path: Path) -> None:
    """Silenced by the threshold task, still firing at the silence's end: sent then, unprompted."""
    from virtmon.alerts.silences import Silences

    path = tmp_path / "v.db"
    silences = Silences(path)
    async with rig(path, rules(QUEUE_RULE), silences=silences) as r:
        await anyio.sleep(0.2)  # the engine idles with no timer
        silences.add("Queue", None, 3.0, "short", time.time())
        r.engine.on_families(families(5))
        await wait_until(lambda: len(r.engine.active) == 1, 5)
        assert r.outbox() == []
        await wait_until(lambda: [row[2] for row in r.outbox()] == ["firing", "firing"], 15)
    silences.close()


async def test_alerts_of_a_domain_gone_for_resolve_after_resolve_with_the_reason(
        tmp_path: Path) -> None:
    """A firing alert whose domain no longer exists resolves once it has been gone for
    resolve_after (its rule waits for a "started" the deleted domain never sends); an alert of
    a domain that exists, or of another URI, stays."""
    present = {"names": frozenset({"web", "db"})}
    async with rig(tmp_path / "v.db", rules(CRASH), default_resolve_after=0.6,
                   present_domains=lambda: ("qemu:///system", present["names"])) as r:
        r.publish(ev("stopped", "failed"), ev("stopped", "failed", domain="db"))
        await r.settle()
        assert len(r.engine.active) == 2
        present["names"] = frozenset({"db"})  # web was deleted
        gone_at = time.monotonic()
        await wait_until(lambda: len(r.engine.active) == 1, 10)
        assert time.monotonic() - gone_at >= 0.6 * 0.5  # not at once: it waits, then looks
        [left] = r.engine.active.values()
        assert left.labels["domain"] == "db"
        [resolved] = r.engine.store.alerts("resolved")
        assert resolved.labels["domain"] == "web"
        assert resolved.annotations["resolved_reason"] == "domain web no longer exists"
        assert [row[2] for row in r.outbox()] == ["firing"] * 4 + ["resolved"] * 2


def test_a_flapping_rule_logs_a_burst_then_one_summary_a_window(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Past its burst a rule's transitions are counted, not logged, and summed up in one line
    when the window ends (each change was a line: 8 a second under churn)."""
    from virtmon.alerts.engine import TransitionLog
    from virtmon.alerts.model import Alert, Notification

    now = {"t": 0.0}
    budget = TransitionLog(lambda: now["t"], burst=3, window=60.0)
    alert = Alert(rule="Flap", labels={"alertname": "Flap", "domain": "web"}, annotations={},
                  state="firing", starts_at=0.0)
    for _ in range(10):
        budget.transition(Notification.of(alert, 0.0))
    lines = capsys.readouterr().out.splitlines()
    assert sum("virtmon.alerts.transition " in line for line in lines) == 3
    assert budget.suppressed == {"Flap": 7}
    now["t"] = 61.0
    budget.transition(Notification.of(alert, 61.0))
    lines = capsys.readouterr().out.splitlines()
    [summary] = [line for line in lines if "transitions_not_logged" in line]
    assert "Flap" in summary and "7" in summary
    assert sum("virtmon.alerts.transition " in line for line in lines) == 1


def test_prune_keeps_the_newest_finished_rows_and_drops_resolved_alerts_of_gone_domains(
        tmp_path: Path) -> None:
    """Finished rows beyond the newest `keep` go whatever their age; resolved alerts of domains
    that no longer exist go after the shorter cutoff; dead letters and firing alerts stay."""
    from virtmon.alerts.model import Alert, Notification

    store = AlertStore(tmp_path / "v.db")
    now = time.time()
    alerts = [Alert(rule="Crash", labels={"alertname": "Crash", "domain": f"d{i}",
                                          "uri": "qemu:///system"},
                    annotations={}, state="firing", starts_at=now - 100 + i,
                    updated_at=now - 100 + i) for i in range(6)]
    resolved = [a.resolved(now - 50 + i) for i, a in enumerate(alerts[:5])]
    store.apply(resolved + alerts[5:], [Notification.of(a, now) for a in resolved],
                TARGETS[:1], now)
    rows = store.rows()
    store.mark([rows[0].id], "dead", now)
    store.mark([r.id for r in rows[1:]], "delivered", now)
    removed = store.prune(now - 86400, keep=3,
                          gone=("qemu:///system", frozenset({"d3", "d4", "d5"}), now - 47))
    assert removed == 1 + 2 + 1  # outbox: 4 delivered -> 3; alerts: 5 resolved -> 3, then d2
    assert {a.labels["domain"] for a in store.alerts()} == {"d3", "d4", "d5"}
    assert sorted(r.state for r in store.rows()) == ["dead"] + ["delivered"] * 3
    store.close()
