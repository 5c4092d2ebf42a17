"""The state database: one SQLite file in WAL mode shared by the journal and the alert tables."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, with ``schema`` applied.

    Each store keeps its own connection, used from one worker thread at a time behind its own
    lock; ``check_same_thread`` is off for that reason. WAL lets the journal, the alert store
    and the readers of the stream work side by side; ``synchronous=NORMAL`` is durable across
    a crash of virtmon (not of the machine) at a fraction of the fsync cost; the busy timeout
    lets two connections of the same file wait for each other instead of failing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


@contextlib.contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """The body's statements committed together, or rolled back if it raises. ``IMMEDIATE``
    takes the write lock at once, so two connections of the file wait (busy timeout) instead of
    failing when both upgrade a read to a write. The caller holds its store's lock."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
