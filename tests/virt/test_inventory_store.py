"""The saved inventory and its recall at start-up: the journal's last word on every domain."""

from __future__ import annotations

from pathlib import Path

from tests.virt.test_inventory import UUID_A, UUID_B, dom
from virtmon.events.journal import Journal
from virtmon.events.model import Event
from virtmon.virt.connection import not_held
from virtmon.virt.inventory import Inventory, Transition
from virtmon.virt.inventory_store import InventoryStore, recall

URI = "qemu:///system"
RUNNING, SHUTOFF = 1, 5


def lifecycle(name: str, domain: str = "a", uuid: str = UUID_A, uri: str = URI) -> Event:
    """A lifecycle event of one domain."""
    return Event(time=1.0, uri=uri, kind="lifecycle", name=name, detail="x", domain=domain,
                 uuid=uuid)


def test_saved_inventory_loads_back_for_its_uri_only(tmp_path: Path) -> None:
    """What was saved comes back with its journal number; another URI gets nothing."""
    store = InventoryStore(tmp_path / "virtmon.db")
    saved = [dom(state=RUNNING, id=3), dom("b", UUID_B)]
    store.save(URI, saved, 41)
    assert store.load(URI) == (saved, 41)
    assert store.load("test:///default") is None
    store.save(URI, saved[1:], 42)  # a save replaces the previous one
    assert store.load(URI) == (saved[1:], 42)
    store.close()


def test_recall_replays_the_lifecycle_events_journaled_after_the_save(tmp_path: Path) -> None:
    """Saved with a running, b shut off; journaled after: a stopped, b started, c defined, and an
    event of another URI: recall gives a shut off, b running, c defined."""
    journal = Journal(tmp_path / "virtmon.db")
    store = InventoryStore(tmp_path / "virtmon.db")
    journal.append([lifecycle("started")])  # before the save: not replayed
    store.save(URI, [dom(state=RUNNING, id=3), dom("b", UUID_B)], journal.last_seq)
    journal.append([lifecycle("stopped"), lifecycle("started", "b", UUID_B),
                    lifecycle("defined", "c", "33333333-3333-3333-3333-333333333333"),
                    lifecycle("undefined", "b", UUID_B, uri="test:///default")])
    known = recall(store, journal, URI)
    assert known is not None
    assert {d.name: (d.state, d.persistent) for d in known} == {
        "a": (SHUTOFF, True), "b": (RUNNING, True), "c": (SHUTOFF, True)}
    assert recall(store, journal, "test:///default") is None
    store.close()
    journal.close()


def test_recall_gives_up_when_retention_removed_events_after_the_save(tmp_path: Path) -> None:
    """Events after the save pruned (a hole): nothing is recalled rather than a wrong state."""
    journal = Journal(tmp_path / "virtmon.db", max_count=1)
    store = InventoryStore(tmp_path / "virtmon.db")
    store.save(URI, [dom(state=RUNNING, id=3)], journal.last_seq)
    journal.append([lifecycle("stopped"), lifecycle("started")])
    assert recall(store, journal, URI) is not None
    journal.prune()  # keeps the last event only: the "stopped" is gone
    assert recall(store, journal, URI) is None
    store.close()
    journal.close()


def test_first_listing_after_a_recall_reports_what_changed_meanwhile() -> None:
    """A recalled inventory makes the first listing report changes, as a reconnect does (a
    fresh one reports nothing the first time)."""
    recalled = Inventory()
    recalled.recall([dom(state=RUNNING, id=3), dom("b", UUID_B)])
    transitions = recalled.replace_all([dom(state=RUNNING, id=9)])
    assert [(t.name, t.domain.name) for t in transitions] == [
        ("undefined", "b"), ("stopped", "a"), ("started", "a")]
    assert Inventory().replace_all([dom()]) == []


def test_a_held_event_stands_for_the_transition_the_listing_found() -> None:
    """A change seen both by the listing and as a held real event is not reported twice."""
    suspended = Transition("suspended", dom(state=RUNNING, id=3), dom(state=3, id=3))
    stopped_b = Transition("stopped", dom("b", UUID_B, 4, RUNNING), None)
    held = [lifecycle("suspended"), lifecycle("resumed", "b", UUID_B)]
    assert not_held([suspended, stopped_b], held) == [stopped_b]
