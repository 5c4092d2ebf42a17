"""The event journal: SQLite in WAL mode in the state directory.

Every event is written here before it is fanned out, so a subscriber that reconnects with
``since=SEQ`` — even across a virtmon restart — gets exactly what it missed. Sequence numbers
continue after a restart and after retention pruning (the last one is kept in a meta table).

All methods are blocking; the bus calls them in a worker thread, one call at a time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtmon.component import Restart
from virtmon.events.database import Checkpointer, open_database, write_transaction
from virtmon.events.model import Event

if TYPE_CHECKING:
    from virtmon.config import EventsConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq    INTEGER PRIMARY KEY,
    time   REAL NOT NULL,
    kind   TEXT NOT NULL,
    domain TEXT,
    data   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
"""


def uuid_key(uuid: str) -> str:
    """A UUID as the stream's filter compares it: 32 hex digits, lower case, no dashes."""
    return uuid.replace("-", "").lower()


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a reader wants: by domain (name or UUID) and by kind (None: any).

    ``domains`` holds names, ``uuids`` UUIDs as :func:`uuid_key` has them; an event matches the
    domain filter when either names its domain.
    """

    domains: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    uuids: frozenset[str] | None = None

    def matches(self, event: Event) -> bool:
        """True when the event passes both filters."""
        if self.domains is not None or self.uuids is not None:
            by_name = self.domains is not None and event.domain in self.domains
            by_uuid = (self.uuids is not None and event.uuid is not None
                       and uuid_key(event.uuid) in self.uuids)
            if not (by_name or by_uuid):
                return False
        return self.kinds is None or event.kind in self.kinds


# The JSON lines of the last events appended, kept for the event streams: an event that reaches
# a stream is serialized once, for the journal, not again for each stream. A stream writes an
# event within milliseconds of its append; 1,024 lines are 0.4 s at 2,500 events/s, and a
# stream further behind makes its lines anew. (4,096 held ~2 MiB, filled only after minutes at
# a quiet host's rate, and was most of the soak's growth in Python objects.)
RECENT_LINES = 1024


class Journal:
    """Append-only event store with retention by age and count."""

    def __init__(self, path: Path, max_age: float = 7 * 86400.0, max_count: int = 1_000_000):
        self.path = path
        self.max_age = max_age
        self.max_count = max_count
        # One connection used from one worker thread at a time (the bus serialises its calls);
        # the lock makes that explicit for readers of the stream, which may overlap a write.
        self._db = open_database(path, SCHEMA)
        self._lock = threading.Lock()
        self.checkpointer = Checkpointer(path)
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
            self._last_seq = int(row[0]) if row else 0
        # seq → JSON line of the last RECENT_LINES events, oldest first (written by append's
        # thread; a get from the loop needs no lock: single operations are atomic under the
        # GIL). An OrderedDict: dropping a plain dict's oldest key scans past the holes earlier
        # deletions left, ~2 µs an event at this size against 0.3.
        self._lines: OrderedDict[int, str] = OrderedDict()

    @property
    def last_seq(self) -> int:
        """The sequence number of the last event written (0 if none ever was)."""
        return self._last_seq

    def use_retention(self, events: EventsConfig) -> None:
        """Keep what ``[events]`` says, from the next :meth:`prune` on."""
        self.max_age = events.retention_days * 86400.0
        self.max_count = events.retention_count

    async def reconfigure(self, events: EventsConfig) -> Restart:
        """Take a reloaded ``[events]``: its retention (the queue sizes wait for a restart)."""
        self.use_retention(events)
        return ()

    def status(self) -> dict[str, Any]:
        """The ``journal`` part of the daemon's status."""
        return {"last_seq": self.last_seq, "path": str(self.path)}

    def append(self, events: Sequence[Event]) -> list[Event]:
        """Number the events, write them in one transaction, and return them numbered."""
        numbered = [event.numbered(self._last_seq + i + 1) for i, event in enumerate(events)]
        if not numbered:
            return numbered
        lines = [e.to_json() for e in numbered]
        with self._lock:
            with write_transaction(self._db) as db:
                db.executemany(
                    "INSERT INTO events (seq, time, kind, domain, data) VALUES (?, ?, ?, ?, ?)",
                    [(e.seq, e.time, e.kind, e.domain, line)
                     for e, line in zip(numbered, lines, strict=True)],
                )
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('last_seq', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (numbered[-1].seq,),
                )
            # Under the lock: a reader's page and the last seq it sees agree (read_page).
            self._last_seq = numbered[-1].seq
        self.checkpointer.wrote()
        for event, line in zip(numbered, lines, strict=True):
            self._lines[event.seq] = line
        while len(self._lines) > RECENT_LINES:
            self._lines.popitem(last=False)
        return numbered

    def line(self, event: Event) -> str:
        """The event's JSON line: as journaled, for one of the last RECENT_LINES appended, else
        made anew (non-blocking)."""
        return self._lines.get(event.seq) or event.to_json()

    def read_since(self, seq: int, limit: int = 1000) -> list[Event]:
        """Events with a sequence number above ``seq``, oldest first, at most ``limit``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [Event.from_dict(json.loads(row[0])) for row in rows]

    def read_page(self, seq: int, limit: int = 1000) -> tuple[list[Event], int]:
        """:meth:`read_since`, and the last sequence number written when it was read."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
            last = self._last_seq
        return [Event.from_dict(json.loads(row[0])) for row in rows], last

    def prune(self, now: float | None = None) -> int:
        """Apply retention: drop events older than ``max_age`` and beyond ``max_count``.

        Only ever a prefix goes, so what remains is contiguous: by age, everything before the
        first event that is young enough (an event stamped earlier than one before it, as a
        reconnect's synthetic one may be, does not punch a hole in the middle).
        """
        cutoff = (time.time() if now is None else now) - self.max_age
        with self._lock, write_transaction(self._db) as db:
            removed = db.execute(
                "DELETE FROM events WHERE seq < COALESCE("
                "(SELECT MIN(seq) FROM events WHERE time >= ?), ?)",
                (cutoff, self._last_seq + 1),
            ).rowcount
            removed += db.execute(
                "DELETE FROM events WHERE seq <= ?", (self._last_seq - self.max_count,)
            ).rowcount
        return int(removed)

    def count(self) -> int:
        """How many events the journal holds."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def iter_all(self) -> Iterable[Event]:
        """Every stored event, oldest first (tests and tools)."""
        seq = 0
        while page := self.read_since(seq):
            yield from page
            seq = page[-1].seq

    def close(self) -> None:
        """Close the database (a checkpoint folds the WAL back into the file)."""
        self.checkpointer.close()
        with self._lock:
            self._db.close()
