"""Silences: a rule or a domain glob muted for a while, kept in the journal's SQLite database.

A silence applies to transitions, not to alerts already announced: while one matches, a *firing*
notification is not enqueued, and the alert (still stored and listed) is recorded as silenced.
Its *resolved* notification is then dropped too, while it stays silenced, so a receiver never
sees a resolve without the firing before it. An alert that fired before the silence was made
keeps being announced as usual (and resolved). When the silence ends (expires, or is lifted with
``unsilence``) and no other one covers an alert it kept quiet, an alert still firing is
*released*: its firing is announced then (with its original start), and its resolve later, as
Alertmanager does at the end of a silence. An alert that resolved during the silence is never
announced.

Invariant: ``_active`` holds every silence row whose ``ends_at`` is in the future and
``_suppressed`` every row of ``silenced_alerts``; both change only together with the table,
under ``_lock``. The engine's commit calls :meth:`Silences.filter` from a worker thread; the
control operations call the rest from others.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtmon.alerts.model import Alert, Notification
from virtmon.events.database import open_database, write_transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS silences (
    id         INTEGER PRIMARY KEY,
    rule       TEXT,
    domain     TEXT,
    starts_at  REAL NOT NULL,
    ends_at    REAL NOT NULL,
    comment    TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS silenced_alerts (
    fingerprint TEXT NOT NULL,
    starts_at   REAL NOT NULL,
    silence_id  INTEGER NOT NULL,
    silenced_at REAL NOT NULL,
    PRIMARY KEY (fingerprint, starts_at)
);
"""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
MAX_DURATION = 366 * 86400.0


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d``, ``1h30m`` as seconds; ValueError otherwise."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 1d, 1h30m)") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError(f"must be more than 0 s and at most 366 d, not {text!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class Silence:
    """One silence: a rule name glob and/or a domain glob, from ``starts_at`` to ``ends_at``."""

    id: int
    rule: str | None
    domain: str | None
    starts_at: float
    ends_at: float
    comment: str
    created_at: float

    def active(self, now: float) -> bool:
        """In force at ``now``."""
        return self.starts_at <= now < self.ends_at

    def matches(self, rule: str, labels: Mapping[str, str]) -> bool:
        """Whether it covers an alert of this rule with these labels (globs, case-sensitive)."""
        if self.rule is not None and not fnmatch.fnmatchcase(rule, self.rule):
            return False
        if self.domain is not None:
            domain = labels.get("domain")
            if domain is None or not fnmatch.fnmatchcase(domain, self.domain):
                return False
        return True

    def to_dict(self, now: float) -> dict[str, Any]:
        """For the control API."""
        return {"id": self.id, "rule": self.rule, "domain": self.domain,
                "starts_at": self.starts_at, "ends_at": self.ends_at, "comment": self.comment,
                "created_at": self.created_at, "active": self.active(now)}


def _silence(values: Sequence[Any]) -> Silence:
    return Silence(int(values[0]), values[1], values[2], float(values[3]), float(values[4]),
                   values[5], float(values[6]))


class Silences:
    """The silences of ``virtmon.db`` and the alerts they kept quiet."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path, SCHEMA)
        self._lock = threading.Lock()
        with self._lock:
            self._active = {s.id: s for s in map(_silence, self._db.execute(
                "SELECT * FROM silences ORDER BY id").fetchall())}
            self._suppressed: dict[tuple[str, float], int] = {
                (r[0], float(r[1])): int(r[2]) for r in self._db.execute(
                    "SELECT fingerprint, starts_at, silence_id FROM silenced_alerts")}
        self.dropped = 0  # notifications not enqueued because of a silence

    def _forget_ended(self, now: float) -> None:
        for ended in [i for i, s in self._active.items() if s.ends_at <= now]:
            del self._active[ended]

    # -- the engine's hook (a worker thread, inside the engine's commit) ----------------------

    def filter(self, notes: Sequence[Notification], now: float) -> list[Notification]:
        """The notifications no silence holds back; the silenced firings are recorded first.

        Recording before the engine stores the alert keeps this safe without one transaction:
        if virtmon dies in between, the events are handled again and silenced again.
        """
        with self._lock:
            self._forget_ended(now)
            if not self._active and not self._suppressed:
                return list(notes)
            kept: list[Notification] = []
            records: list[tuple[str, float, int, float]] = []
            for note in notes:
                moment = (note.fingerprint, note.starts_at)
                if note.status == "resolved":
                    if moment in self._suppressed:
                        continue
                elif moment in self._suppressed:
                    continue  # handled again after a restart: still silenced
                else:
                    silence = next((s for s in self._active.values()
                                    if s.active(now) and s.matches(note.rule, note.labels)), None)
                    if silence is not None:
                        records.append((*moment, silence.id, now))
                        continue
                kept.append(note)
            if records:
                with write_transaction(self._db) as db:
                    db.executemany(
                        "INSERT OR IGNORE INTO silenced_alerts (fingerprint, starts_at, "
                        "silence_id, silenced_at) VALUES (?, ?, ?, ?)", records)
                for fp, starts_at, silence_id, _at in records:
                    self._suppressed[(fp, starts_at)] = silence_id
            self.dropped += len(notes) - len(kept)
            return kept

    def released(self, firing: Sequence[Alert], now: float) -> list[Alert]:
        """The firing alerts kept quiet by silences of which none covers them any more."""
        with self._lock:
            if not self._suppressed:
                return []
            self._forget_ended(now)
            return [a for a in firing if (a.fingerprint, a.starts_at) in self._suppressed
                    and not any(s.active(now) and s.matches(a.rule, a.labels)
                                for s in self._active.values())]

    def forget(self, released: Sequence[Alert]) -> None:
        """Drop the records of released alerts (after their firing was enqueued)."""
        moments = [(a.fingerprint, a.starts_at) for a in released]
        with self._lock:
            self._db.executemany(
                "DELETE FROM silenced_alerts WHERE fingerprint = ? AND starts_at = ?", moments)
            for moment in moments:
                self._suppressed.pop(moment, None)

    # The two below are called on the event loop, so without the lock: a dict's truth and
    # ``list()`` of its values are taken whole under the GIL, and a stale answer only moves a
    # wake-up (``released`` decides under the lock).

    def holds_any(self) -> bool:
        """Whether some alert is kept quiet (only then can a silence's end release one)."""
        return bool(self._suppressed)

    def next_end(self) -> float | None:
        """When the first silence in force ends, if any alert is kept quiet (for a timer)."""
        if not self._suppressed:
            return None
        ends = [s.ends_at for s in list(self._active.values())]
        return min(ends) if ends else None

    def notified(self, alerts: Sequence[Alert]) -> list[Alert]:
        """The alerts whose firing was announced (what an Alertmanager re-send may repeat)."""
        with self._lock:
            return [a for a in alerts if (a.fingerprint, a.starts_at) not in self._suppressed]

    def silenced_by(self, alert: Alert) -> int | None:
        """The silence that kept this alert quiet, if one did."""
        with self._lock:
            return self._suppressed.get((alert.fingerprint, alert.starts_at))

    # -- the control operations -----------------------------------------------------------------

    def add(self, rule: str | None, domain: str | None, seconds: float, comment: str,
            now: float) -> Silence:
        """A new silence from now, for ``seconds``."""
        if rule is None and domain is None:
            raise ValueError("a silence needs a rule or a domain glob")
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO silences (rule, domain, starts_at, ends_at, comment, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (rule, domain, now, now + seconds, comment, now))
            silence = Silence(int(cursor.lastrowid or 0), rule, domain, now, now + seconds,
                              comment, now)
            self._active[silence.id] = silence
            return silence

    def end(self, silence_id: int, now: float) -> Silence | None:
        """End a silence now (the row stays, for the record); None if it is unknown."""
        with self._lock:
            self._db.execute("UPDATE silences SET ends_at = MIN(ends_at, ?) WHERE id = ?",
                             (now, silence_id))
            rows = self._db.execute("SELECT * FROM silences WHERE id = ?",
                                    (silence_id,)).fetchall()
            self._active.pop(silence_id, None)
            return _silence(rows[0]) if rows else None

    def all(self, include_ended: bool, now: float, limit: int = 1000) -> list[Silence]:
        """Silences in force (and, with ``include_ended``, past ones), newest first."""
        with self._lock:
            sql = "SELECT * FROM silences" + ("" if include_ended else " WHERE ends_at > ?")
            params: tuple[Any, ...] = () if include_ended else (now,)
            return [_silence(r) for r in self._db.execute(
                f"{sql} ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()]

    def prune(self, cutoff: float) -> int:
        """Forget silences ended before ``cutoff`` and records of alerts no longer stored."""
        with self._lock:
            removed = self._db.execute("DELETE FROM silences WHERE ends_at < ?",
                                       (cutoff,)).rowcount
            removed += self._db.execute(
                "DELETE FROM silenced_alerts WHERE silenced_at < ? AND NOT EXISTS (SELECT 1 FROM "
                "alerts a WHERE a.fingerprint = silenced_alerts.fingerprint AND "
                "a.starts_at = silenced_alerts.starts_at)", (cutoff,)).rowcount
            self._suppressed = {
                (r[0], float(r[1])): int(r[2]) for r in self._db.execute(
                    "SELECT fingerprint, starts_at, silence_id FROM silenced_alerts")}
            return int(removed)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
