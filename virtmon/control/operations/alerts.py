"""virtmon's own alerts: alert state, the outbox, dead letters, silences and test alerts.

No libvirt here: each body takes the daemon's :class:`~virtmon.alerts.service.AlertService` and
runs in a worker thread (the store and the silences are SQLite). Looking needs ``read``; retrying
dead letters, silencing and sending a test alert need ``write`` (and ``control.allow_write``).
A bad argument raises :class:`ArgumentError` (400), an unknown id or receiver
:class:`NotFound` (404); the executor wakes the delivery tasks after every write.
"""

from __future__ import annotations

import fnmatch
import uuid
from typing import TYPE_CHECKING, Any

from virtmon.alerts.model import Alert, Notification
from virtmon.alerts.silences import parse_duration
from virtmon.control.operations.model import ArgumentError, Operation, arg, need, op

if TYPE_CHECKING:
    from virtmon.alerts.service import AlertService

A = "alerts"
STATES = ("all", "firing", "pending", "resolved")
LIMIT = arg("limit", "unsigned", 100, "at most this many rows (newest first)")
RECEIVER = arg("receiver", "string", None, "only this receiver")
TEST_RULE = "VirtmonTest"


class NotFound(LookupError):
    """No such receiver, dead letter or silence (404)."""


def _receiver(service: AlertService, name: str | None) -> None:
    if name is not None and name not in {t.receiver.name for t in service.targets}:
        known = ", ".join(sorted({t.receiver.name for t in service.targets})) or "none"
        raise NotFound(f"no receiver {name!r} (configured: {known})")


def _limit(a: dict[str, Any]) -> int:
    return max(1, min(int(a["limit"]), 10000))


def alert_dict(service: AlertService, alert: Alert) -> dict[str, Any]:
    """One alert for the API: its state, identity, text and whether a silence kept it quiet."""
    silence = service.silences.silenced_by(alert)
    return {"fingerprint": alert.fingerprint, "rule": alert.rule, "state": alert.state,
            "severity": alert.labels.get("severity"), "domain": alert.labels.get("domain"),
            "summary": alert.annotations.get("summary", ""), "starts_at": alert.starts_at,
            "ends_at": alert.ends_at, "updated_at": alert.updated_at, "count": alert.count,
            "silenced": silence is not None, "silence_id": silence,
            "labels": dict(alert.labels), "annotations": dict(alert.annotations)}


def list_alerts(service: AlertService, a: dict[str, Any]) -> dict[str, Any]:
    """Stored alerts, newest first."""
    state = str(a["state"]).lower()
    if state not in STATES:
        raise ArgumentError("state", f"must be one of {', '.join(STATES)}, not {state!r}")
    alerts = service.store.alerts(None if state == "all" else state, _limit(a),
                                  rule=a["rule"], domain=a["domain"])
    return {"alerts": [alert_dict(service, x) for x in alerts]}


def outbox(service: AlertService, a: dict[str, Any]) -> dict[str, Any]:
    """Pending deliveries: per receiver URL the depth and oldest row, then the rows."""
    _receiver(service, a["receiver"])
    now = service.clock()
    queues = []
    for target in service.targets:
        if a["receiver"] not in (None, target.receiver.name):
            continue
        depth, oldest = service.store.queue_stats(target.receiver.name, target.url)
        queues.append({"receiver": target.receiver.name, "url": target.url, "pending": depth,
                       "oldest_created_at": oldest,
                       "oldest_age": None if oldest is None else max(0.0, now - oldest)})
    rows = service.store.rows("pending", a["receiver"], _limit(a))
    return {"queues": queues, "rows": [r.to_dict() for r in rows]}


def dead_letters(service: AlertService, a: dict[str, Any]) -> dict[str, Any]:
    """Rows a receiver refused for good (3xx/4xx other than 408/429), newest first."""
    _receiver(service, a["receiver"])
    return {"rows": [r.to_dict() for r in service.store.rows("dead", a["receiver"],
                                                             _limit(a))]}


def retry_dead(service: AlertService, a: dict[str, Any]) -> dict[str, Any]:
    """One dead letter (``id``) or all of them (``all``) back in the queue, due now."""
    if (a["id"] is None) == (not a["all"]):
        raise ArgumentError("id", "give the id of a dead letter, or all=true (not both)")
    ids = None if a["all"] else [int(a["id"])]
    retried, superseded = service.store.retry_dead(ids, service.clock())
    if ids is not None and not retried + superseded:
        raise NotFound(f"no dead letter with id {ids[0]} (alerts.dead_letters lists them)")
    return {"retried": retried, "superseded": superseded}


def silence(service: AlertService, a: dict[str, Any]) -> dict[str, Any]:
    """Silence a rule (name or glob) and/or a domain glob for a duration."""
    rule, domain = a["rule"] or None, a["domain"] or None
    if rule is None and domain is None:
        raise ArgumentError("rule", "give a rule, a domain glob, or both")
    if rule is not None:
        names = {r.name for r in service.engine.event_rules} | {
            r.name for r in service.engine.threshold_rules}
        if not any(fnmatch.fnmatchcase(n, rule) for n in names):
            raise ArgumentError("rule", f"no configured rule matches {rule!r}")
    try:
        seconds = parse_duration(str(a["duration"]))
    except ValueError as exc:
        raise ArgumentError("duration", str(exc)) from None
    made = service.silences.add(rule, domain, seconds, a["comment"], service.clock())
    return made.to_dict(service.clock())


def silences(service: AlertService, a: dict[str, Any]) -> dict[str, Any]:
    """Silences in force, or every one kept (``all``)."""
    now = service.clock()
    return {"silences": [s.to_dict(now) for s in service.silences.all(a["all"], now,
                                                                      _limit(a))]}


def unsilence(service: AlertService, a: dict[str, Any]) -> dict[str, Any]:
    """End a silence now: alerts it kept quiet that still fire are announced, and new ones too."""
    now = service.clock()
    ended = service.silences.end(int(a["id"]), now)
    if ended is None:
        raise NotFound(f"no silence with id {a['id']} (alerts.silences lists them)")
    return ended.to_dict(now)


def test_alert(service: AlertService, a: dict[str, Any]) -> dict[str, Any]:
    """A firing test alert queued for every URL of one receiver (the outbox, as any alert)."""
    name = str(a["receiver"])
    _receiver(service, name)
    now = service.clock()
    test_id = uuid.uuid4().hex[:12]
    alert = Alert(rule=TEST_RULE, labels={
        "alertname": TEST_RULE, "severity": "info", "instance": service.host,
        "receiver": name, "test_id": test_id},
        annotations={"summary": a["summary"] or f"Test alert from virtmon on {service.host}",
                     "description": "Sent by alerts.test (virtmonctl alerts test); "
                                    "no action needed."},
        state="firing", starts_at=now, updated_at=now)
    note = Notification.of(alert, now)
    targets = [(t.receiver.name, t.url) for t in service.targets if t.receiver.name == name]
    queued = service.store.apply([], [note], targets, now)
    return {"receiver": name, "key": note.key, "test_id": test_id, "queued": queued,
            "urls": [url for _name, url in targets]}


OPERATIONS: list[Operation] = [
    op("alerts.list", A, "read", "Alerts (firing, pending, resolved), silenced ones marked", "",
       list_alerts, arg("state", "string", "all", "all, firing, pending or resolved"),
       arg("rule", "string", None, "a rule name or glob"),
       arg("domain", "string", None, "a domain name glob"), LIMIT),
    op("alerts.outbox", A, "read", "Pending deliveries per receiver: attempts, next attempt, "
       "last error", "", outbox, RECEIVER, LIMIT),
    op("alerts.dead_letters", A, "read", "Deliveries a receiver refused (retryable)", "",
       dead_letters, RECEIVER, LIMIT),
    op("alerts.retry_dead", A, "write", "Queue one dead letter, or all, for delivery again", "",
       retry_dead, arg("id", "unsigned", None, "a dead letter's id (alerts.dead_letters)"),
       arg("all", "boolean", False, "every dead letter")),
    op("alerts.silence", A, "write", "Silence a rule and/or a domain glob for a duration", "",
       silence, arg("rule", "string", None, "a rule name or glob"),
       arg("domain", "string", None, "a domain name glob"),
       need("duration", "string", "e.g. 90s, 15m, 2h, 1d, 1h30m (at most 366 d)"),
       arg("comment", "string", "", "why")),
    op("alerts.silences", A, "read", "Silences in force (all=true: ended ones too)", "",
       silences, arg("all", "boolean", False, "ended silences too"), LIMIT),
    op("alerts.unsilence", A, "write", "End a silence now", "", unsilence,
       need("id", "unsigned", "the silence's id (alerts.silences)")),
    op("alerts.test", A, "write", "Queue a test alert for one receiver", "", test_alert,
       need("receiver", "string", "the receiver's name"),
       arg("summary", "string", None, "the test alert's summary")),
]
