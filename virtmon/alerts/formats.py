"""Request bodies for each receiver kind, and the HMAC signature over them.

- ``json``: virtmon's own document, schema version ``1`` (docs/alerts.md)::

      {"version": "1", "source": "virtmon", "host": "hv1", "sent_at": "2024-...Z",
       "alerts": [{"key": ..., "status": "firing", "fingerprint": ..., "rule": ...,
                   "labels": {...}, "annotations": {...}, "starts_at": "...Z",
                   "ends_at": null}]}

- ``alertmanager``: the API v2 ``postableAlerts`` array for ``POST /api/v2/alerts``. A firing
  alert carries ``endsAt`` = now + 4 x the resend interval (as Prometheus does), so it stays
  active while virtmon keeps re-sending it and expires on its own if virtmon disappears.
- ``cloudevents``: CloudEvents 1.0, one event per request in structured mode
  (``application/cloudevents+json``) when ``batch_size`` is 1, else batch mode
  (``application/cloudevents-batch+json``) whatever the number of events in a request.

The signature header is ``X-Virtmon-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256 with the shared secret over ``"<t>." + body``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin

from virtmon.alerts.model import Notification, rfc3339

JSON_SCHEMA_VERSION = "1"
SIGNATURE_HEADER = "X-Virtmon-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
CLOUDEVENT_TYPE = "io.virtmon.alert."


def _dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def alertmanager_endpoint(url: str) -> str:
    """``POST /api/v2/alerts`` under a peer's base URL (a full path is used as given)."""
    if url.rstrip("/").endswith("/api/v2/alerts"):
        return url
    return urljoin(url if url.endswith("/") else url + "/", "api/v2/alerts")


def json_alert(note: Notification) -> dict[str, Any]:
    """One alert of the json document."""
    return {"key": note.key, "status": note.status, "fingerprint": note.fingerprint,
            "rule": note.rule, "labels": dict(note.labels), "annotations": dict(note.annotations),
            "starts_at": rfc3339(note.starts_at),
            "ends_at": rfc3339(note.ends_at) if note.ends_at is not None else None}


def json_body(notes: Sequence[Notification], host: str, now: float) -> tuple[bytes, str]:
    """The json receiver's body and content type."""
    return _dumps({"version": JSON_SCHEMA_VERSION, "source": "virtmon", "host": host,
                   "sent_at": rfc3339(now), "alerts": [json_alert(n) for n in notes]}), \
        "application/json"


def alertmanager_alert(note: Notification, now: float, resend_interval: float,
                       generator_url: str) -> dict[str, Any]:
    """One ``postableAlert``."""
    ends_at = note.ends_at if note.ends_at is not None else now + 4 * resend_interval
    alert: dict[str, Any] = {
        "labels": dict(note.labels),
        "annotations": dict(note.annotations),
        "startsAt": rfc3339(note.starts_at),
        "endsAt": rfc3339(ends_at),
    }
    if generator_url:
        alert["generatorURL"] = generator_url
    return alert


def alertmanager_body(notes: Sequence[Notification], now: float, resend_interval: float,
                      generator_url: str) -> tuple[bytes, str]:
    """The Alertmanager receiver's body and content type."""
    return _dumps([alertmanager_alert(n, now, resend_interval, generator_url)
                   for n in notes]), "application/json"


def cloudevent(note: Notification, host: str) -> dict[str, Any]:
    """One CloudEvents 1.0 event in structured JSON."""
    return {
        "specversion": "1.0",
        "id": note.key,
        "source": f"virtmon://{host}",
        "type": CLOUDEVENT_TYPE + note.status,
        "subject": note.labels.get("domain") or note.rule,
        "time": rfc3339(note.ended_or_started),
        "datacontenttype": "application/json",
        "dataschema": f"https://virtmon.invalid/schemas/alert/v{JSON_SCHEMA_VERSION}",
        "data": json_alert(note),
    }


def cloudevents_body(notes: Sequence[Notification], host: str,
                     batched: bool) -> tuple[bytes, str]:
    """The CloudEvents receiver's body and content type: structured mode (one event) for a
    receiver of ``batch_size = 1``, else batch mode, even for a request of one event, so that a
    receiver reads one content type only."""
    if not batched:
        [note] = notes
        return _dumps(cloudevent(note, host)), "application/cloudevents+json; charset=utf-8"
    return _dumps([cloudevent(n, host) for n in notes]), \
        "application/cloudevents-batch+json; charset=utf-8"


def batch_key(notes: Sequence[Notification]) -> str:
    """The idempotency key of a request: the alert's key, or a hash of a batch's keys."""
    if len(notes) == 1:
        return notes[0].key
    return hashlib.sha256(",".join(n.key for n in notes).encode()).hexdigest()[:32]


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, header: str, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does: recompute the HMAC, compare in constant time, check the age."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))
