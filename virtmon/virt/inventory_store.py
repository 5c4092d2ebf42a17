"""The last known inventory, kept in the state database so that a restart reconciles like a
reconnect.

Without it, the first listing after a start has nothing to compare with: a domain that crashed,
started again or was removed while virtmon was down changes silently, and an alert about it stays
firing for ever. So the daemon saves the inventory with the journal's sequence number at that
moment (every few minutes and when it stops), and at start-up :func:`recall` replays the
lifecycle events journaled after that number on top of it. The result is what the journal last
said about every domain; the first listing's differences from it are journaled as synthetic
transitions, exactly as after a reconnect.

Every method blocks; callers run them in a worker thread. One connection, behind a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import astuple
from pathlib import Path

from virtmon.events.database import open_database, write_transaction
from virtmon.events.journal import Journal
from virtmon.virt.inventory import DomainState, Inventory

SCHEMA = """
CREATE TABLE IF NOT EXISTS inventory_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inventory (
    name       TEXT NOT NULL,
    uuid       TEXT PRIMARY KEY,
    id         INTEGER NOT NULL,
    state      INTEGER NOT NULL,
    reason     INTEGER NOT NULL,
    persistent INTEGER NOT NULL
);
"""
REPLAY_PAGE = 1000


class InventoryStore:
    """The ``inventory`` tables of ``virtmon.db``: one saved inventory, of one URI."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path, SCHEMA)
        self._lock = threading.Lock()

    def save(self, uri: str, domains: Iterable[DomainState], seq: int) -> None:
        """Replace the saved inventory: ``domains`` of ``uri`` as of journal number ``seq``."""
        rows = [astuple(domain) for domain in domains]
        with self._lock, write_transaction(self._db) as db:
            db.execute("DELETE FROM inventory")
            db.executemany("INSERT INTO inventory VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.executemany(
                "INSERT INTO inventory_meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [("uri", uri), ("seq", str(seq))])

    def load(self, uri: str) -> tuple[list[DomainState], int] | None:
        """The saved inventory of ``uri`` and its journal number; None if none was saved."""
        with self._lock:
            meta = dict(self._db.execute("SELECT key, value FROM inventory_meta").fetchall())
            if meta.get("uri") != uri or "seq" not in meta:
                return None
            rows = self._db.execute(
                "SELECT name, uuid, id, state, reason, persistent FROM inventory").fetchall()
        domains = [DomainState(name, uuid, int(id_), int(state), int(reason), bool(persistent))
                   for name, uuid, id_, state, reason, persistent in rows]
        return domains, int(meta["seq"])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


def recall(store: InventoryStore, journal: Journal, uri: str) -> list[DomainState] | None:
    """What the journal last said about every domain of ``uri``: the saved inventory with the
    lifecycle events after it replayed. None when nothing was saved, or when retention removed
    events after the saved point (replaying around a hole would invent transitions)."""
    saved = store.load(uri)
    if saved is None:
        return None
    domains, seq = saved
    inventory = Inventory()
    inventory.recall(domains)
    expected = seq + 1
    while page := journal.read_since(seq, REPLAY_PAGE):
        if page[0].seq != expected:
            return None
        for event in page:
            if (event.kind == "lifecycle" and event.uri == uri and event.uuid
                    and event.domain and event.name):
                inventory.apply_lifecycle(event.domain, event.uuid, event.name)
        seq = page[-1].seq
        expected = seq + 1
    if journal.last_seq > seq:  # the newest events were pruned (a count limit below a page)
        return None
    return inventory.all()
