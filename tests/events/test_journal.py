"""Tests of the SQLite event journal: numbering, restarts, paging, retention, WAL."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from virtmon.events.database import CACHE_KIB, open_database
from virtmon.events.journal import EventFilter, Journal, uuid_key
from virtmon.events.model import Event

DAY = 86400.0


def ev(n: int = 0, t: float | None = None, domain: str | None = "d",
       kind: str = "lifecycle") -> Event:
    """An unnumbered event; ``n`` goes into the payload to tell events apart."""
    return Event(time=time.time() if t is None else t, uri="test:///default", kind=kind,
                 name="started", domain=domain, payload={"n": n})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """The journal file (in a not yet existing subdirectory)."""
    return tmp_path / "state" / "virtmon.db"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    """An open journal, closed after the test."""
    j = Journal(path)
    yield j
    j.close()


def seqs(events: list[Event]) -> list[int]:
    """The sequence numbers of ``events``."""
    return [e.seq for e in events]


def test_empty_journal(journal: Journal, path: Path) -> None:
    """A new journal creates its directory and has last_seq 0 and no events."""
    assert path.exists()
    assert journal.last_seq == 0
    assert journal.count() == 0
    assert journal.read_since(0) == []
    assert journal.append([]) == []
    assert journal.last_seq == 0


def test_append_numbers_events_monotonically(journal: Journal) -> None:
    """Each append numbers its events after the last one and returns them numbered."""
    first = journal.append([ev(1), ev(2), ev(3)])
    second = journal.append([ev(4), ev(5)])
    assert seqs(first) == [1, 2, 3]
    assert seqs(second) == [4, 5]
    assert [e.payload["n"] for e in first + second] == [1, 2, 3, 4, 5]
    assert journal.last_seq == 5
    assert journal.count() == 5


def test_events_round_trip(journal: Journal) -> None:
    """What read_since returns equals what append returned, field for field."""
    original = Event(time=1234.5, uri="qemu:///system", kind="io_error", name="io_error",
                     detail="report", domain="vm1", uuid="u-1",
                     payload={"path": "/d.img", "nested": {"a": [1, 2]}, "ü": "ß"},
                     synthetic=True)
    numbered = journal.append([original])
    assert journal.read_since(0) == numbered
    assert numbered[0] == original.numbered(1)


def test_seq_continues_after_close_and_reopen(path: Path) -> None:
    """A reopened journal numbers on from the last sequence number written."""
    j = Journal(path)
    j.append([ev(1), ev(2)])
    j.close()
    j = Journal(path)
    try:
        assert j.last_seq == 2
        assert seqs(j.append([ev(3)])) == [3]
        assert seqs(j.read_since(0)) == [1, 2, 3]
    finally:
        j.close()


def test_seq_continues_after_prune_removed_everything(path: Path) -> None:
    """Even with every event pruned, numbering continues (also across a reopen)."""
    j = Journal(path, max_age=DAY)
    j.append([ev(i, t=time.time() - 10 * DAY) for i in range(4)])
    assert j.prune() == 4
    assert j.count() == 0
    assert seqs(j.append([ev(5)])) == [5]
    j.prune(now=time.time() + 10 * DAY)
    assert j.count() == 0
    j.close()
    j = Journal(path)
    try:
        assert j.last_seq == 5
        assert seqs(j.append([ev(6)])) == [6]
    finally:
        j.close()


def test_read_since_pages(journal: Journal) -> None:
    """read_since(seq, limit) returns the next ``limit`` events after ``seq``, oldest first."""
    journal.append([ev(i) for i in range(25)])
    assert seqs(journal.read_since(0, limit=10)) == list(range(1, 11))
    assert seqs(journal.read_since(10, limit=10)) == list(range(11, 21))
    assert seqs(journal.read_since(20, limit=10)) == list(range(21, 26))
    assert journal.read_since(25, limit=10) == []
    assert seqs(journal.read_since(7, limit=3)) == [8, 9, 10]


def test_iter_all_spans_pages(journal: Journal) -> None:
    """iter_all walks every event across several 1000-event pages."""
    journal.append([ev(i) for i in range(2500)])
    assert seqs(list(journal.iter_all())) == list(range(1, 2501))


def test_prune_by_age(journal: Journal) -> None:
    """Events older than max_age are removed; younger ones stay."""
    now = 1_000_000_000.0
    journal.max_age = 7 * DAY
    journal.append([ev(1, t=now - 8 * DAY), ev(2, t=now - 7 * DAY - 1), ev(3, t=now - 6 * DAY),
                    ev(4, t=now)])
    assert journal.prune(now=now) == 2
    assert seqs(journal.read_since(0)) == [3, 4]
    assert journal.prune(now=now) == 0


def test_prune_by_age_removes_only_a_prefix(journal: Journal) -> None:
    """An old-stamped event after a young one (a reconnect's synthetic event) stays until every
    event before it goes: what remains is contiguous, so a reader never meets a hole."""
    now = 1_000_000_000.0
    journal.max_age = 7 * DAY
    journal.append([ev(1, t=now - 9 * DAY), ev(2, t=now - 6 * DAY), ev(3, t=now - 8 * DAY),
                    ev(4, t=now)])
    assert journal.prune(now=now) == 1
    assert seqs(journal.read_since(0)) == [2, 3, 4]
    assert journal.prune(now=now + 2 * DAY) == 2
    assert seqs(journal.read_since(0)) == [4]


def test_read_page_gives_the_last_seq_with_the_page(journal: Journal) -> None:
    """read_page returns the page and the last sequence number written, also once pruned."""
    journal.append([ev(i) for i in range(5)])
    assert [e.seq for e in journal.read_page(2, 2)[0]] == [3, 4]
    assert journal.read_page(2, 2)[1] == 5
    journal.max_count = 1
    journal.prune()
    journal.max_count = 0
    journal.prune()
    assert journal.read_page(0) == ([], 5)


def test_prune_by_count(path: Path) -> None:
    """Beyond max_count, the oldest events are removed and the newest max_count stay."""
    j = Journal(path, max_count=3)
    try:
        j.append([ev(i) for i in range(10)])
        assert j.prune() == 7
        assert seqs(j.read_since(0)) == [8, 9, 10]
        j.append([ev(11)])
        assert j.prune() == 1
        assert seqs(j.read_since(0)) == [9, 10, 11]
    finally:
        j.close()


def test_prune_by_age_and_count_together(path: Path) -> None:
    """Both limits apply in one prune and the removed count is not double-counted."""
    now = 2_000_000_000.0
    j = Journal(path, max_age=DAY, max_count=2)
    try:
        j.append([ev(1, t=now - 2 * DAY), ev(2, t=now - 2 * DAY), ev(3, t=now), ev(4, t=now),
                  ev(5, t=now)])
        assert j.prune(now=now) == 3
        assert seqs(j.read_since(0)) == [4, 5]
    finally:
        j.close()


def test_wal_mode_is_on(journal: Journal, path: Path) -> None:
    """The database is in WAL mode (seen from a second connection)."""
    journal.append([ev(1)])
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    finally:
        other.close()


def test_a_store_connection_holds_its_page_cache_to_the_bound(journal: Journal,
                                                              path: Path) -> None:
    """Every store's connection (open_database: the journal's, and one opened beside it as the
    alert, silence and inventory stores open theirs) caps SQLite's page cache at CACHE_KIB,
    where a plain connection has SQLite's default."""
    other = open_database(path, "")
    plain = sqlite3.connect(path)
    try:
        for db in (journal._db, other):
            assert db.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB
        assert plain.execute("PRAGMA cache_size").fetchone()[0] != -CACHE_KIB
    finally:
        other.close()
        plain.close()


def test_reader_sees_committed_events_from_another_connection(journal: Journal, path: Path) -> None:
    """A second Journal on the same file reads what the first committed (one transaction)."""
    journal.append([ev(1), ev(2)])
    reader = Journal(path)
    try:
        assert seqs(reader.read_since(0)) == [1, 2]
    finally:
        reader.close()


def test_event_filter() -> None:
    """EventFilter matches by domain and by kind; None matches anything."""
    a_life = ev(domain="a")
    b_reboot = ev(domain="b", kind="reboot")
    conn = ev(domain=None, kind="connection")
    assert all(EventFilter().matches(e) for e in (a_life, b_reboot, conn))
    by_domain = EventFilter(domains=frozenset({"a"}))
    assert [by_domain.matches(e) for e in (a_life, b_reboot, conn)] == [True, False, False]
    by_kind = EventFilter(kinds=frozenset({"reboot", "connection"}))
    assert [by_kind.matches(e) for e in (a_life, b_reboot, conn)] == [False, True, True]
    both = EventFilter(domains=frozenset({"b"}), kinds=frozenset({"lifecycle"}))
    assert not any(both.matches(e) for e in (a_life, b_reboot, conn))


def test_event_filter_by_uuid_or_name() -> None:
    """A domain filter matches by name or by UUID (compared without dashes or case)."""
    uuid = "1B4E28BA-2FA1-11D2-883F-0016D3CCA427"
    a_life = replace(ev(domain="a"), uuid=uuid.lower())
    b_reboot = replace(ev(domain="b", kind="reboot"), uuid="00000000-0000-0000-0000-000000000001")
    conn = ev(domain=None, kind="connection")
    by_uuid = EventFilter(uuids=frozenset({uuid_key(uuid)}))
    assert [by_uuid.matches(e) for e in (a_life, b_reboot, conn)] == [True, False, False]
    either = EventFilter(domains=frozenset({"b"}), uuids=frozenset({uuid_key(uuid)}))
    assert [either.matches(e) for e in (a_life, b_reboot, conn)] == [True, True, False]


def test_the_lines_kept_for_the_streams_are_the_journaled_ones_and_bounded(
        journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event's line (what a stream sends) is the JSON it was journaled with; only the last
    RECENT_LINES are kept, and an older event's line is made anew, the same."""
    monkeypatch.setattr("virtmon.events.journal.RECENT_LINES", 2)
    events = journal.append([ev(1), ev(2), ev(3)])
    journaled = [e.to_json() for e in journal.read_since(0)]
    assert [journal.line(e) for e in events] == journaled == [e.to_json() for e in events]
    assert sorted(journal._lines) == [2, 3]


def wal_bytes(path: Path) -> int:
    """The size of the database's WAL file."""
    return path.with_name(path.name + "-wal").stat().st_size


def test_the_checkpointer_folds_the_wal_back_so_commits_reuse_it(
        journal: Journal, path: Path) -> None:
    """Every ``every`` commits the checkpointer's thread checkpoints the WAL, and commits after
    it write from the WAL's start again: writing less than that again does not grow the file
    (no commit had to checkpoint, or the WAL would have grown past the first checkpoint)."""
    every = journal.checkpointer.every
    for n in range(every):
        journal.append([ev(n)])
    deadline = time.monotonic() + 10
    while journal.checkpointer.checkpoints < 1:
        assert time.monotonic() < deadline, "no checkpoint after the commits"
        time.sleep(0.01)
    size = wal_bytes(path)
    for n in range(every // 2):
        journal.append([ev(n)])
    assert wal_bytes(path) == size
    assert journal.checkpointer.checkpoints == 1


def test_the_checkpoint_thread_comes_with_the_first_commit_and_goes_with_close(
        path: Path) -> None:
    """A journal only read has no checkpoint thread; the first commit starts one, and only
    one; close ends it."""
    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "virtmon-checkpoint"]

    journal = Journal(path)
    journal.read_since(0)
    assert not threads()
    for n in range(journal.checkpointer.every + 1):
        journal.append([ev(n)])
    [thread] = threads()
    journal.close()
    assert not thread.is_alive()


def test_commits_leave_the_checkpoint_to_the_checkpointer(journal: Journal, path: Path) -> None:
    """No commit checkpoints below the backstop: with the checkpointer held back, 1,500
    commits (three pages or more each) grow the WAL to twice SQLite's default of 1,000 pages,
    where a commit would have checkpointed and the WAL restarted from its start."""
    journal.checkpointer.every = 10**9
    for n in range(1500):
        journal.append([ev(n)])
    with contextlib.closing(sqlite3.connect(path)) as other:
        page = other.execute("PRAGMA page_size").fetchone()[0]
    assert wal_bytes(path) > 2000 * page
