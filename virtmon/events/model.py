"""The Event every part of virtmon passes around: frozen, JSON-ready, numbered by the journal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# Kinds that are not domain events: the connection to libvirt itself, a control-API call that
# changed something or ran privileged, and the admin helper's own comings and goings.
CONNECTION_KIND = "connection"
AUDIT_KIND = "audit"
ADMIN_KIND = "admin"
VIRTMON_KINDS = (CONNECTION_KIND, AUDIT_KIND, ADMIN_KIND)


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded event.

    ``seq`` is 0 until the journal numbers it; numbers are monotonic and survive restarts.
    ``synthetic`` marks a transition virtmon inferred (by reconciling after a reconnect) rather
    than one libvirt delivered.
    """

    time: float
    uri: str
    kind: str
    name: str
    detail: str | None = None
    domain: str | None = None
    uuid: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    synthetic: bool = False
    seq: int = 0

    def numbered(self, seq: int) -> Event:
        """This event with its journal sequence number."""
        return replace(self, seq=seq)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON object (the stream's and the journal's format)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "uri": self.uri,
            "domain": self.domain,
            "uuid": self.uuid,
            "kind": self.kind,
            "name": self.name,
            "detail": self.detail,
            "payload": dict(self.payload),
            "synthetic": self.synthetic,
        }

    def to_json(self) -> str:
        """One compact JSON line."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """The inverse of :meth:`to_dict`."""
        return cls(
            seq=int(data["seq"]),
            time=float(data["time"]),
            uri=str(data["uri"]),
            domain=data.get("domain"),
            uuid=data.get("uuid"),
            kind=str(data["kind"]),
            name=str(data["name"]),
            detail=data.get("detail"),
            payload=dict(data.get("payload") or {}),
            synthetic=bool(data.get("synthetic", False)),
        )
