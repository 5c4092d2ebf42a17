"""Tests of the inventory: lifecycle events applied to domains, and reconciling a fresh listing
into the transitions missed while disconnected."""

from __future__ import annotations

import pytest

from virtmon.virt.inventory import DomainState, Inventory, Transition

RUNNING, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = 1, 3, 4, 5, 6, 7
UUID_A = "11111111-1111-1111-1111-111111111111"
UUID_B = "22222222-2222-2222-2222-222222222222"
UUID_C = "33333333-3333-3333-3333-333333333333"


def dom(
    name: str = "a", uuid: str = UUID_A, id: int = -1, state: int = SHUTOFF,
    persistent: bool = True, reason: int = 0,
) -> DomainState:
    """A DomainState with handy defaults (a defined, shut-off domain 'a')."""
    return DomainState(name, uuid, id, state, reason, persistent)


def names(transitions: list[Transition]) -> list[tuple[str, str]]:
    """(event name, domain name) of each transition."""
    return [(t.name, t.domain.name) for t in transitions]


def populated(*domains: DomainState) -> Inventory:
    """An inventory whose first listing was ``domains``."""
    inv = Inventory()
    assert inv.replace_all(domains) == []
    return inv


# -- apply_lifecycle ---------------------------------------------------------------------------


def test_defined_adds_a_persistent_shutoff_domain() -> None:
    """'defined' for an unknown domain adds it persistent and shut off."""
    inv = Inventory()
    inv.apply_lifecycle("a", UUID_A, "defined")
    assert inv.get(UUID_A) == dom()


def test_started_on_an_unknown_domain_adds_a_running_transient_one() -> None:
    """'started' for a domain never seen adds it running and not persistent."""
    inv = Inventory()
    inv.apply_lifecycle("t", UUID_B, "started", reason=1)
    found = inv.get(UUID_B)
    assert found is not None
    assert (found.state_name, found.reason, found.persistent, found.active) == (
        "running", 1, False, True
    )


@pytest.mark.parametrize(("event", "state"), [
    ("started", RUNNING), ("suspended", PAUSED), ("resumed", RUNNING), ("stopped", SHUTOFF),
    ("crashed", CRASHED), ("pmsuspended", PMSUSPENDED),
])
def test_state_changing_events(event: str, state: int) -> None:
    """Each state-changing lifecycle event leaves a persistent domain in its state, with reason."""
    inv = populated(dom(state=RUNNING if event != "started" else SHUTOFF, id=3))
    inv.apply_lifecycle("a", UUID_A, event, reason=2)
    found = inv.get(UUID_A)
    assert found is not None
    assert (found.state, found.reason, found.persistent) == (state, 2, True)


@pytest.mark.parametrize("event", ["shutdown", "defined"])
def test_events_that_keep_the_state(event: str) -> None:
    """'shutdown' (guest began shutting down) and a re-'defined' leave the state as it was."""
    inv = populated(dom(state=RUNNING, id=3, reason=1))
    inv.apply_lifecycle("a", UUID_A, event, reason=5)
    assert inv.get(UUID_A) == dom(state=RUNNING, id=3, reason=1)


def test_defined_makes_a_transient_domain_persistent() -> None:
    """'defined' on a running transient domain makes it persistent, still running."""
    inv = populated(dom(state=RUNNING, id=4, persistent=False))
    inv.apply_lifecycle("a", UUID_A, "defined")
    assert inv.get(UUID_A) == dom(state=RUNNING, id=4, persistent=True)


def test_stopped_removes_a_transient_domain() -> None:
    """A transient domain is gone once it stops."""
    inv = populated(dom(state=RUNNING, id=4, persistent=False))
    inv.apply_lifecycle("a", UUID_A, "stopped")
    assert inv.get(UUID_A) is None
    assert len(inv) == 0


def test_undefined_removes_an_inactive_domain() -> None:
    """'undefined' on a shut-off domain removes it."""
    inv = populated(dom())
    inv.apply_lifecycle("a", UUID_A, "undefined")
    assert inv.get(UUID_A) is None


def test_undefined_keeps_a_running_domain_as_transient() -> None:
    """'undefined' on a running domain keeps it, now transient; its stop then removes it."""
    inv = populated(dom(state=RUNNING, id=4))
    inv.apply_lifecycle("a", UUID_A, "undefined")
    assert inv.get(UUID_A) == dom(state=RUNNING, id=4, persistent=False)
    inv.apply_lifecycle("a", UUID_A, "stopped")
    assert inv.get(UUID_A) is None


def test_duplicate_and_unknown_events_are_tolerated() -> None:
    """Repeated events are idempotent; 'undefined'/'stopped' of unknown domains do nothing."""
    inv = Inventory()
    inv.apply_lifecycle("x", UUID_C, "undefined")
    inv.apply_lifecycle("y", UUID_B, "stopped")
    assert len(inv) == 0
    for _ in range(2):
        inv.apply_lifecycle("a", UUID_A, "defined")
        inv.apply_lifecycle("a", UUID_A, "started")
    assert inv.all() == [dom(state=RUNNING)]


def test_unknown_event_name_keeps_the_state() -> None:
    """A lifecycle name the inventory does not know leaves the domain as it was."""
    inv = populated(dom(state=PAUSED, id=2))
    inv.apply_lifecycle("a", UUID_A, "event_99")
    assert inv.get(UUID_A) == dom(state=PAUSED, id=2)


# -- reconcile (replace_all / diff) ----------------------------------------------------------


def test_first_listing_yields_nothing() -> None:
    """The first replace_all takes the listing as is and reports no transitions."""
    inv = Inventory()
    before = inv.populated
    assert inv.replace_all([dom(state=RUNNING, id=1), dom("b", UUID_B)]) == []
    assert (before, inv.populated) == (False, True)
    assert [d.name for d in inv.all()] == ["a", "b"]


def test_names_are_every_domain_name_and_follow_a_rename() -> None:
    """names() holds each listed domain's name once, and a rename (libvirt sends undefined for
    the old name, then defined for the new) moves it."""
    inv = Inventory()
    inv.replace_all([dom(state=RUNNING, id=1), dom("b", UUID_B)])
    assert inv.names() == {"a", "b"}
    inv.apply_lifecycle("b", UUID_B, "undefined")
    inv.apply_lifecycle("c", UUID_B, "defined")
    assert inv.names() == {"a", "c"}


def test_unchanged_listing_yields_nothing() -> None:
    """A second identical listing reports no transitions."""
    listing = [dom(state=RUNNING, id=1), dom("b", UUID_B), dom("c", UUID_C, 2, PAUSED, False)]
    inv = populated(*listing)
    assert inv.replace_all(listing) == []


def test_destroyed_while_away_is_stopped() -> None:
    """A persistent domain running before and shut off now gives 'stopped'."""
    inv = populated(dom(state=RUNNING, id=3))
    transitions = inv.replace_all([dom()])
    assert names(transitions) == [("stopped", "a")]
    assert transitions[0].before == dom(state=RUNNING, id=3)
    assert transitions[0].after == dom()


def test_transient_destroyed_while_away_is_stopped_only() -> None:
    """A transient running domain that vanished gives 'stopped' (it was never defined)."""
    inv = populated(dom(state=RUNNING, id=3, persistent=False))
    transitions = inv.replace_all([])
    assert names(transitions) == [("stopped", "a")]
    assert transitions[0].after is None


def test_persistent_running_domain_gone_is_stopped_and_undefined() -> None:
    """A running persistent domain that vanished gives 'stopped' then 'undefined'."""
    inv = populated(dom(state=RUNNING, id=3))
    assert names(inv.replace_all([])) == [("stopped", "a"), ("undefined", "a")]
    assert len(inv) == 0


def test_shutoff_persistent_domain_gone_is_undefined() -> None:
    """A shut-off persistent domain that vanished gives only 'undefined'."""
    inv = populated(dom())
    assert names(inv.replace_all([])) == [("undefined", "a")]


def test_new_running_domain_is_defined_and_started() -> None:
    """A new persistent running domain gives 'defined' then 'started'."""
    inv = populated()
    transitions = inv.replace_all([dom("n", UUID_B, 7, RUNNING)])
    assert names(transitions) == [("defined", "n"), ("started", "n")]
    assert all(t.before is None for t in transitions)


def test_new_transient_domain_is_started_only() -> None:
    """A new transient running domain gives only 'started'; a new shut-off one only 'defined'."""
    inv = populated()
    transitions = inv.replace_all([dom("t", UUID_B, 7, RUNNING, persistent=False),
                                   dom("d", UUID_C)])
    assert names(transitions) == [("started", "t"), ("defined", "d")]


def test_paused_to_running_is_resumed() -> None:
    """paused -> running (same id) gives 'resumed'."""
    inv = populated(dom(state=PAUSED, id=3))
    assert names(inv.replace_all([dom(state=RUNNING, id=3)])) == [("resumed", "a")]


@pytest.mark.parametrize(("before", "after", "event"), [
    (RUNNING, PAUSED, "suspended"),
    (SHUTOFF, RUNNING, "started"),
    (RUNNING, CRASHED, "crashed"),
    (RUNNING, PMSUSPENDED, "pmsuspended"),
    (RUNNING, SHUTDOWN, "shutdown"),
    (PAUSED, SHUTOFF, "stopped"),
])
def test_state_changes_map_to_events(before: int, after: int, event: str) -> None:
    """Each state change of a known domain becomes its lifecycle event name."""
    id_before = 3 if before != SHUTOFF else -1
    id_after = 3 if after not in (SHUTOFF, CRASHED) else -1
    inv = populated(dom(state=before, id=id_before))
    assert names(inv.replace_all([dom(state=after, id=id_after)])) == [(event, "a")]


def test_restarted_while_away_is_stopped_then_started() -> None:
    """Running before and after with a different id gives 'stopped' then 'started'."""
    inv = populated(dom(state=RUNNING, id=3))
    transitions = inv.replace_all([dom(state=RUNNING, id=9)])
    assert names(transitions) == [("stopped", "a"), ("started", "a")]
    assert transitions[0].after is not None and transitions[0].after.state == SHUTOFF
    assert transitions[1].after == dom(state=RUNNING, id=9)


def test_restarted_into_paused_is_stopped_then_suspended() -> None:
    """Running before, paused now with a new id: stopped, then the paused state's event."""
    inv = populated(dom(state=RUNNING, id=3))
    assert names(inv.replace_all([dom(state=PAUSED, id=9)])) == [
        ("stopped", "a"), ("suspended", "a")
    ]


def test_reconcile_replaces_the_inventory() -> None:
    """After replace_all the inventory holds exactly the new listing."""
    inv = populated(dom(state=RUNNING, id=3), dom("b", UUID_B))
    fresh = [dom("c", UUID_C, 5, RUNNING)]
    inv.replace_all(fresh)
    assert inv.all() == fresh


def test_domain_started_by_an_event_is_not_reported_restarted() -> None:
    """A domain started (by event) while connected is not a synthetic restart at reconnect."""
    inv = populated(dom())  # listed shut off: id -1
    inv.apply_lifecycle("a", UUID_A, "started", reason=1)
    assert inv.replace_all([dom(state=RUNNING, id=7, reason=1)]) == []


def test_stopped_domain_is_not_found_by_its_old_id() -> None:
    """A numeric id names a running domain only; after 'stopped' the old id finds nothing."""
    inv = populated(dom(state=RUNNING, id=3))
    inv.apply_lifecycle("a", UUID_A, "stopped")
    assert inv.find("3") is None


def test_undefined_while_running_is_reported() -> None:
    """A running domain that stayed running but was undefined while away gives 'undefined'."""
    inv = populated(dom(state=RUNNING, id=3))
    assert names(inv.replace_all([dom(state=RUNNING, id=3, persistent=False)])) == [
        ("undefined", "a")
    ]


# -- lookups -----------------------------------------------------------------------------------


def test_find_by_name_uuid_and_id() -> None:
    """find() accepts a name, a UUID or a positive numeric id."""
    a = dom("alpha", UUID_A, 3, RUNNING)
    b = dom("beta", UUID_B)
    inv = populated(a, b)
    assert inv.find("alpha") == a
    assert inv.find(UUID_A) == a
    assert inv.find("3") == a
    assert inv.find("beta") == b
    assert inv.find(UUID_B) == b
    assert inv.find("-1") is None  # shut-off domains have no id
    assert inv.find("gamma") is None
    assert inv.find("4") is None


def test_numeric_name_is_found_by_name() -> None:
    """A domain whose name is digits is found by that name even if no id matches."""
    inv = populated(dom("42", UUID_A))
    found = inv.find("42")
    assert found is not None and found.uuid == UUID_A


def test_all_is_sorted_by_name_and_to_dict_is_json_ready() -> None:
    """all() sorts by name; to_dict gives the state name and the active flag."""
    inv = populated(dom("zeta", UUID_A), dom("alpha", UUID_B, 2, PAUSED, False, 1))
    assert [d.name for d in inv.all()] == ["alpha", "zeta"]
    assert inv.all()[0].to_dict() == {
        "name": "alpha", "uuid": UUID_B, "id": 2, "state": "paused", "state_code": PAUSED,
        "reason": 1, "persistent": False, "active": True,
    }
    assert dom(state=42).state_name == "unknown_42"
