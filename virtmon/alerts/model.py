"""The alert, its fingerprint, and the notification an outbox row carries to a receiver.

An alert's identity is its rule plus its labels (``alertname`` is the rule's name): the
fingerprint is a hash of the sorted labels, stable across restarts and hosts, so the same
condition is one alert however often its event repeats (de-duplication). It is virtmon's own
(SHA-256 of the labels as JSON): Alertmanager fingerprints the same labels its own way (a
64-bit FNV-1a hash), so the two values differ; the label set is what identifies an alert in
both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

State = Literal["pending", "firing", "resolved"]


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit id of a label set."""
    text = json.dumps(sorted(labels.items()), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rfc3339(timestamp: float) -> str:
    """Unix time as RFC 3339 in UTC with milliseconds (what Alertmanager and CloudEvents read)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: pending (waiting out ``for``), firing, or resolved (``ends_at`` set)."""

    rule: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    state: State
    starts_at: float
    ends_at: float | None = None
    updated_at: float = 0.0
    # Events (or cycles) that matched while it was active: de-duplicated repeats.
    count: int = 1
    resolve_at: float | None = None  # auto-resolve time for one-shot event rules
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.labels))

    @property
    def active(self) -> bool:
        """Pending or firing."""
        return self.state != "resolved"

    def fired(self, now: float) -> Alert:
        """The pending alert, now firing."""
        return replace(self, state="firing", updated_at=now)

    def resolved(self, now: float) -> Alert:
        """The alert, resolved now."""
        return replace(self, state="resolved", ends_at=now, updated_at=now)

    def repeated(self, now: float) -> Alert:
        """The alert after one more matching event (no new notification)."""
        return replace(self, count=self.count + 1, updated_at=now)


@dataclass(frozen=True, slots=True)
class Notification:
    """What one outbox row delivers: a firing or resolved alert, receiver-neutral.

    ``key`` is the idempotency key: the same for every attempt (and every peer) delivering
    this transition of this alert, different for the next transition.
    """

    key: str
    status: Literal["firing", "resolved"]
    fingerprint: str
    rule: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float | None
    created_at: float

    @classmethod
    def of(cls, alert: Alert, now: float) -> Notification:
        """The notification of an alert's current state (firing or resolved)."""
        status: Literal["firing", "resolved"] = (
            "resolved" if alert.state == "resolved" else "firing")
        seed = f"{alert.fingerprint}:{status}:{alert.starts_at:.6f}"
        key = hashlib.sha256(seed.encode()).hexdigest()[:32]
        return cls(key, status, alert.fingerprint, alert.rule, dict(alert.labels),
                   dict(alert.annotations), alert.starts_at, alert.ends_at, now)

    @property
    def ended_or_started(self) -> float:
        """When this transition happened: the end of a resolved alert, else its start."""
        return self.ends_at if self.ends_at is not None else self.starts_at

    def to_dict(self) -> dict[str, Any]:
        """The notification as JSON (the outbox's storage and the json receiver's alert)."""
        return {
            "key": self.key, "status": self.status, "fingerprint": self.fingerprint,
            "rule": self.rule, "labels": dict(self.labels),
            "annotations": dict(self.annotations), "starts_at": self.starts_at,
            "ends_at": self.ends_at, "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        """The inverse of :meth:`to_dict`."""
        return cls(str(data["key"]), data["status"], str(data["fingerprint"]), str(data["rule"]),
                   dict(data["labels"]), dict(data["annotations"]), float(data["starts_at"]),
                   None if data.get("ends_at") is None else float(data["ends_at"]),
                   float(data["created_at"]))
