"""Alert state, the outbox and dead letters: tables in the journal's SQLite database (WAL).

Rule 9: an alert's state change and the outbox rows that announce it to every receiver URL are
written in one transaction, together with the journal sequence number of the last event the
engine has handled. After a crash the engine resumes from that number (the journal still has
the events), so an event is never half-handled: either its transition and its deliveries are
stored, or neither is and it is handled again. Outbox rows are unique per (receiver, url,
idempotency key), so handling an event twice enqueues nothing twice.

Every method blocks; callers run them in a worker thread. One connection, behind a lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtmon.alerts.model import Alert, Notification
from virtmon.events.database import open_database, write_transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY,
    rule        TEXT NOT NULL,
    labels      TEXT NOT NULL,
    annotations TEXT NOT NULL,
    state       TEXT NOT NULL,
    starts_at   REAL NOT NULL,
    ends_at     REAL,
    updated_at  REAL NOT NULL,
    count       INTEGER NOT NULL,
    resolve_at  REAL
);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state);
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY,
    receiver     TEXT NOT NULL,
    url          TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   REAL NOT NULL,
    next_attempt REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL DEFAULT 'pending',
    last_error   TEXT,
    updated_at   REAL NOT NULL,
    batch        TEXT,
    UNIQUE (receiver, url, key)
);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox (receiver, url, state, id);
"""

# Where a notification goes: (receiver name, url); a delivery.Target sends to one.
Destination = tuple[str, str]
# Finished rows kept whatever their age (resolved alerts; delivered, expired, superseded outbox
# rows): under domain churn the age limit alone let them grow without bound.
KEEP_FINISHED = 10_000


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One delivery of one notification to one receiver URL."""

    id: int
    receiver: str
    url: str
    notification: Notification
    created_at: float
    next_attempt: float
    attempts: int
    state: str
    last_error: str | None
    # The Idempotency-Key of the request that first carried this row: a retry sends the same
    # rows again under it (a batch never grows or shrinks between attempts).
    batch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """For the control API and tools."""
        return {"id": self.id, "receiver": self.receiver, "url": self.url,
                "key": self.notification.key, "status": self.notification.status,
                "rule": self.notification.rule, "fingerprint": self.notification.fingerprint,
                "created_at": self.created_at, "next_attempt": self.next_attempt,
                "attempts": self.attempts, "state": self.state, "last_error": self.last_error}


_ROW_COLUMNS = ("id, receiver, url, body, created_at, next_attempt, attempts, state, "
                "last_error, batch")


def _row(values: Sequence[Any]) -> OutboxRow:
    return OutboxRow(int(values[0]), values[1], values[2],
                     Notification.from_dict(json.loads(values[3])), float(values[4]),
                     float(values[5]), int(values[6]), values[7], values[8], values[9])


def _alert(values: Sequence[Any]) -> Alert:
    return Alert(rule=values[1], labels=json.loads(values[2]), annotations=json.loads(values[3]),
                 state=values[4], starts_at=float(values[5]), ends_at=values[6],
                 updated_at=float(values[7]), count=int(values[8]), resolve_at=values[9],
                 fingerprint=values[0])


class AlertStore:
    """The alert tables of ``virtmon.db``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_database(path, SCHEMA)
        self._lock = threading.Lock()
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "batch" not in columns:  # a database written before batches were remembered
            self._db.execute("ALTER TABLE outbox ADD COLUMN batch TEXT")

    def _transaction_counts(self, statements: Iterable[tuple[str, Sequence[Any]]]
                            ) -> list[int]:
        """Run statements in one transaction; the rows each one changed."""
        with self._lock, write_transaction(self._db) as db:
            return [db.execute(sql, params).rowcount for sql, params in statements]

    def _transaction(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> int:
        """Run statements in one transaction; the rows they changed in all."""
        return sum(self._transaction_counts(statements))

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- alert state ------------------------------------------------------------------------

    def last_seq(self) -> int | None:
        """The journal sequence number of the last event handled (None: never ran)."""
        rows = self._query("SELECT value FROM alert_meta WHERE key='last_seq'")
        return int(rows[0][0]) if rows else None

    def apply(self, alerts: Sequence[Alert], notifications: Sequence[Notification],
              targets: Sequence[Destination], now: float, last_seq: int | None = None) -> int:
        """Store alert states and enqueue each notification for every target, atomically.

        Returns the number of outbox rows added (a notification already queued is not).
        """
        statements: list[tuple[str, Sequence[Any]]] = []
        for alert in alerts:
            statements.append((
                "INSERT OR REPLACE INTO alerts (fingerprint, rule, labels, annotations, state, "
                "starts_at, ends_at, updated_at, count, resolve_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (alert.fingerprint, alert.rule, json.dumps(dict(alert.labels)),
                 json.dumps(dict(alert.annotations)), alert.state, alert.starts_at,
                 alert.ends_at, alert.updated_at, alert.count, alert.resolve_at)))
        for note in notifications:
            body = json.dumps(note.to_dict(), separators=(",", ":"))
            for receiver, url in targets:
                statements.append((
                    "INSERT OR IGNORE INTO outbox (receiver, url, key, fingerprint, body, "
                    "created_at, next_attempt, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (receiver, url, note.key, note.fingerprint, body, now, now, now)))
        if last_seq is not None:
            statements.append((
                "INSERT INTO alert_meta (key, value) VALUES ('last_seq', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (last_seq,)))
        changed = self._transaction(statements)
        return changed - len(alerts) - (last_seq is not None)

    def active(self) -> list[Alert]:
        """Pending and firing alerts."""
        return [_alert(r) for r in self._query(
            "SELECT * FROM alerts WHERE state != 'resolved' ORDER BY starts_at")]

    def alerts(self, state: str | None = None, limit: int | None = 1000, *,
               rule: str | None = None, domain: str | None = None) -> list[Alert]:
        """Alerts, newest first, optionally in one state, of a rule and a domain (SQL globs);
        ``limit`` None: all of them (a re-send must reach every firing alert)."""
        where, params = [], []
        for clause, value in (("state = ?", state), ("rule GLOB ?", rule),
                              ("json_extract(labels, '$.domain') GLOB ?", domain)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT * FROM alerts" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self._query(f"{sql} ORDER BY updated_at DESC LIMIT ?",
                           (*params, -1 if limit is None else limit))  # -1: SQLite's "no limit"
        return [_alert(r) for r in rows]

    # -- the outbox ------------------------------------------------------------------------

    def due(self, receiver: str, url: str, limit: int) -> list[OutboxRow]:
        """The next request's rows of one target, head of line first: the rows that were sent
        together before (all of them, whatever ``limit`` is now), else the oldest pending rows
        not sent yet, at most ``limit``."""
        rows = [_row(r) for r in self._query(
            f"SELECT {_ROW_COLUMNS} FROM outbox WHERE receiver = ? AND url = ? AND "
            "state = 'pending' ORDER BY id LIMIT ?", (receiver, url, limit))]
        if not rows or rows[0].batch is None:
            return [r for r in rows if r.batch is None]
        return [_row(r) for r in self._query(
            f"SELECT {_ROW_COLUMNS} FROM outbox WHERE receiver = ? AND url = ? AND "
            "state = 'pending' AND batch = ? ORDER BY id", (receiver, url, rows[0].batch))]

    def queue_stats(self, receiver: str, url: str) -> tuple[int, float | None]:
        """(pending rows, creation time of the oldest) of one target."""
        rows = self._query("SELECT COUNT(*), MIN(created_at) FROM outbox WHERE receiver = ? AND "
                           "url = ? AND state = 'pending'", (receiver, url))
        return int(rows[0][0]), rows[0][1]

    def mark(self, ids: Sequence[int], state: str, now: float, *, next_attempt: float = 0.0,
             error: str | None = None, attempted: bool = True, batch: str | None = None) -> None:
        """Record an attempt's outcome: delivered, pending (retry at ``next_attempt``), dead;
        ``batch``: the request's Idempotency-Key, kept from the first attempt on."""
        self._transaction(
            ("UPDATE outbox SET state = ?, next_attempt = ?, attempts = attempts + ?, "
             "last_error = ?, updated_at = ?, batch = COALESCE(batch, ?) WHERE id = ?",
             (state, next_attempt, int(attempted), error, now, batch, row_id))
            for row_id in ids)

    def expire(self, receiver: str, url: str, cutoff: float, now: float) -> int:
        """Pending rows created before ``cutoff`` are given up (state expired); how many."""
        return self._transaction([(
            "UPDATE outbox SET state = 'expired', updated_at = ? WHERE receiver = ? AND url = ? "
            "AND state = 'pending' AND created_at < ?", (now, receiver, url, cutoff))])

    def rows(self, state: str | None = None, receiver: str | None = None,
             limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows (pending, delivered, dead, expired), newest first."""
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if receiver is not None:
            where.append("receiver = ?")
            params.append(receiver)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return [_row(r) for r in self._query(
            f"SELECT {_ROW_COLUMNS} FROM outbox {clause} ORDER BY id DESC LIMIT ?",
            (*params, limit))]

    def retry_dead(self, ids: Sequence[int] | None, now: float) -> tuple[int, int]:
        """Dead letters (all, or these ids) back to pending, due now: (retried, superseded).

        A dead letter that a later transition of the same alert has followed to the same target
        is not sent again but marked ``superseded``: a stale "firing" delivered after its
        "resolved" would make the receiver show the alert active again (and a stale "resolved"
        would end a newer firing).
        """
        newer = ("EXISTS (SELECT 1 FROM outbox AS later WHERE later.receiver = outbox.receiver "
                 "AND later.url = outbox.url AND later.fingerprint = outbox.fingerprint "
                 "AND later.id > outbox.id)")
        chosen = "" if ids is None else f" AND id IN ({', '.join('?' * len(ids))})"
        params = () if ids is None else tuple(ids)
        superseded, retried = self._transaction_counts([
            ("UPDATE outbox SET state = 'superseded', updated_at = ? "
             f"WHERE state = 'dead'{chosen} AND {newer}", (now, *params)),
            ("UPDATE outbox SET state = 'pending', next_attempt = ?, created_at = ?, "
             f"updated_at = ?, batch = NULL WHERE state = 'dead'{chosen}",
             (now, now, now, *params)),
        ])
        return retried, superseded

    def prune(self, cutoff: float, keep: int = KEEP_FINISHED,
              gone: tuple[str, frozenset[str], float] | None = None) -> int:
        """Forget finished rows: delivered, expired and superseded outbox rows and resolved
        alerts last changed before ``cutoff``, all but the newest ``keep`` of each, and, with
        ``gone`` = (uri, names of the domains that exist, cutoff), resolved alerts of that URI's
        other domains last changed before that cutoff. Dead letters stay (an operator acts on
        them). Returns how many rows went."""
        finished = "state IN ('delivered', 'expired', 'superseded')"
        statements: list[tuple[str, Sequence[Any]]] = [
            (f"DELETE FROM outbox WHERE {finished} AND updated_at < ?", (cutoff,)),
            ("DELETE FROM alerts WHERE state = 'resolved' AND updated_at < ?", (cutoff,)),
            (f"DELETE FROM outbox WHERE {finished} AND id NOT IN "
             f"(SELECT id FROM outbox WHERE {finished} ORDER BY id DESC LIMIT ?)", (keep,)),
            ("DELETE FROM alerts WHERE state = 'resolved' AND fingerprint NOT IN (SELECT "
             "fingerprint FROM alerts WHERE state = 'resolved' ORDER BY updated_at DESC LIMIT ?)",
             (keep,)),
        ]
        if gone is not None:
            uri, names, gone_cutoff = gone
            statements.append((
                "DELETE FROM alerts WHERE state = 'resolved' AND updated_at < ? "
                "AND json_extract(labels, '$.uri') = ? "
                "AND json_extract(labels, '$.domain') NOT IN (SELECT value FROM json_each(?))",
                (gone_cutoff, uri, json.dumps(sorted(names)))))
        return self._transaction(statements)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
