"""The state database: one SQLite file in WAL mode shared by the journal and the alert tables."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import structlog

log = structlog.get_logger("virtmon.events.database")

# SQLite folds the WAL back into the file (a checkpoint) inside the commit that takes the WAL
# past this many pages: that commit copies every page and waits for fsync. The journal's
# Checkpointer does it beside the commits; this only bounds the WAL (~4 MiB a 1,000 pages)
# should it fall behind, and covers the stores that write seldom.
BACKSTOP_PAGES = 8192
# Each connection's page cache, at most (SQLite's default is 2,000 KiB). Every store keeps a
# connection for the daemon's life, and each cache filled as the file grew: in the soak the
# daemon's RSS grew 6.7-7.8 % after the warm-up, 2.1 % with this and the journal's shorter list
# of recent lines. Writes append and readers read the newest pages, so few pages are hot.
CACHE_KIB = 512


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, with ``schema`` applied.

    Each store keeps its own connection, used from one worker thread at a time behind its own
    lock; ``check_same_thread`` is off for that reason. WAL lets the journal, the alert store
    and the readers of the stream work side by side; ``synchronous=NORMAL`` is durable across
    a crash of virtmon (not of the machine) at a fraction of the fsync cost; the busy timeout
    lets two connections of the same file wait for each other instead of failing; the page
    cache is held to ``CACHE_KIB``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    db.executescript(schema)
    return db


class Checkpointer:
    """Folds a database's WAL back into its file in a thread of its own, off every commit.

    Left to SQLite, the commit that takes the WAL past its limit makes the checkpoint: it copies
    the pages and waits for fsync, and every event behind that commit waits too (with the
    checkpoint made here instead, the events benchmark's latency p99 went from 5.4-5.7 to
    3.4-3.6 ms). A writer calls
    :meth:`wrote` after each commit; every ``every`` commits this thread makes a PASSIVE
    checkpoint, which never waits for, or blocks, a reader or a writer. The thread starts with
    the first commit (a reader alone never starts it); idle, it only waits.
    """

    def __init__(self, path: Path, every: int = 256) -> None:
        self.path = path
        self.every = every
        self.checkpoints = 0
        self._commits = 0
        self._wanted = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None

    def wrote(self) -> None:
        """One commit more (in the writer's thread; no I/O here)."""
        if self._thread is None:  # with the first commit: a daemon's thread count stays flat
            self._thread = threading.Thread(target=self._run, name="virtmon-checkpoint",
                                            daemon=True)
            self._thread.start()
        self._commits += 1
        if self._commits >= self.every:
            self._commits = 0
            self._wanted.set()

    def close(self) -> None:
        """Stop the thread (after the checkpoint under way, if any)."""
        self._closing = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                 timeout=10.0)
        except sqlite3.Error as exc:  # the backstop still bounds the WAL
            log.warning("virtmon.database.checkpointer_failed", error=str(exc))
            return
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._closing:
                    return
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the backstop still bounds the WAL
                    log.warning("virtmon.database.checkpoint_failed", error=str(exc))
        finally:
            db.close()


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
