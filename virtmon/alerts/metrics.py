"""The alert and webhook families, built fresh each cycle from the components' counters.

Sample::

    # TYPE virtmon_alerts_active gauge
    virtmon_alerts_active{state="firing",severity="critical"} 1
    # TYPE virtmon_alerts_notifications_total counter
    virtmon_alerts_notifications_total{status="firing"} 3
    # TYPE virtmon_webhook_deliveries_total counter
    virtmon_webhook_deliveries_total{receiver="am",outcome="delivered"} 3
    # TYPE virtmon_webhook_queue_depth gauge
    virtmon_webhook_queue_depth{receiver="am"} 0
    # TYPE virtmon_webhook_oldest_pending_age_seconds gauge
    virtmon_webhook_oldest_pending_age_seconds{receiver="am"} 0
    # TYPE virtmon_webhook_attempts_total counter
    virtmon_webhook_attempts_total{receiver="am"} 4
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from virtmon.alerts.delivery import Target
from virtmon.alerts.engine import AlertEngine
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

OUTCOMES = ("delivered", "failed", "error", "rate_limited", "dead", "expired", "resent",
            "resend_failed", "resend_rejected")


# Every family of alert_families, in exposition order.
FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec("virtmon_alerts_active", "gauge",
               "Alerts pending or firing, by state and severity.", ("state", "severity"),
               unit="alerts", source="pending and firing alerts"),
    FamilySpec("virtmon_alerts_notifications_total", "counter",
               "Alert transitions enqueued for delivery, by status.", ("status",),
               unit="notifications", source="alert transitions enqueued (firing, resolved)"),
    FamilySpec("virtmon_alerts_cycles_dropped_total", "counter",
               "Collection cycles the threshold rules skipped (queue full).",
               unit="cycles", source="cycles the threshold rules skipped"),
    FamilySpec("virtmon_webhook_deliveries_total", "counter",
               "Outbox rows by the outcome of their delivery attempt (resent, resend_failed, "
               "resend_rejected: requests re-sending firing alerts).", ("receiver", "outcome"),
               unit="rows",
               source="outbox rows by delivery outcome (with receivers configured)"),
    FamilySpec("virtmon_webhook_queue_depth", "gauge",
               "Outbox rows waiting for delivery.", ("receiver",),
               unit="rows", source="rows waiting for delivery"),
    FamilySpec("virtmon_webhook_oldest_pending_age_seconds", "gauge",
               "Age of the oldest outbox row waiting for delivery (0: none).", ("receiver",),
               unit="seconds", source="age of the oldest waiting row (0: none)"),
    FamilySpec("virtmon_webhook_attempts_total", "counter",
               "HTTP requests made to receivers.", ("receiver",),
               unit="requests", source="delivery requests made"),
)
_FAMILY = by_name(FAMILIES)


def alert_families(engine: AlertEngine, targets: Sequence[Target], now: float
                   ) -> list[MetricFamily]:
    """The ``virtmon_alerts_*`` and ``virtmon_webhook_*`` families."""
    active = _FAMILY["virtmon_alerts_active"].new()
    counts = Counter((a.state, a.labels.get("severity", "")) for a in engine.active.values())
    for state in ("pending", "firing"):
        for severity in ("critical", "warning", "info"):
            active.add((state, severity), counts[(state, severity)])
    notes = _FAMILY["virtmon_alerts_notifications_total"].new()
    for status in ("firing", "resolved"):
        notes.add((status,), engine.notifications[status])
    dropped = _FAMILY["virtmon_alerts_cycles_dropped_total"].new()
    dropped.add((), engine.families_dropped)
    deliveries = _FAMILY["virtmon_webhook_deliveries_total"].new()
    depth = _FAMILY["virtmon_webhook_queue_depth"].new()
    age = _FAMILY["virtmon_webhook_oldest_pending_age_seconds"].new()
    attempts = _FAMILY["virtmon_webhook_attempts_total"].new()
    by_receiver: dict[str, list[Target]] = {}
    for target in targets:
        by_receiver.setdefault(target.receiver.name, []).append(target)
    for name in sorted(by_receiver):
        group = by_receiver[name]
        total: Counter[str] = Counter()
        for target in group:
            total.update(target.outcomes)
        for outcome in OUTCOMES:
            deliveries.add((name, outcome), total[outcome])
        depth.add((name,), sum(t.depth for t in group))
        oldest = [t.oldest for t in group if t.oldest is not None]
        age.add((name,), max(0.0, now - min(oldest)) if oldest else 0.0)
        attempts.add((name,), sum(t.attempts for t in group))
    return [active, notes, dropped, deliveries, depth, age, attempts]
