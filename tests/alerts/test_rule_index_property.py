"""EventRuleIndex (alerts/rules.py) against trying every rule on every event, over generated
rules and events."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from virtmon.alerts.ruleconfig import load_rules
from virtmon.alerts.rules import EventRule, EventRuleIndex, Matcher
from virtmon.events.model import Event

KINDS = ["lifecycle", "io_error", "watchdog", "reboot", "connection"]
NAMES = ["started", "stopped", "crashed", "undefined", "defined", "resumed", "pause", "report"]

_matchers = st.builds(
    Matcher,
    kinds=st.one_of(st.none(), st.frozensets(st.sampled_from(KINDS), min_size=1, max_size=2)),
    names=st.one_of(st.none(), st.frozensets(st.sampled_from(NAMES), min_size=1, max_size=3)),
    details=st.one_of(st.none(), st.frozensets(st.sampled_from(["crashed", "failed"]),
                                               min_size=1)),
    payload=st.one_of(st.just({}), st.just({"action": frozenset({"pause"})})),
)
_rules = st.builds(
    EventRule, name=st.sampled_from(["A", "B", "C"]), severity=st.just("warning"),
    summary=st.just("s"), description=st.just("d"), labels=st.just({}),
    match=st.lists(_matchers, min_size=1, max_size=2).map(tuple),
    resolve=st.lists(_matchers, max_size=2).map(tuple),
)
_events = st.builds(
    Event, time=st.just(1.0), uri=st.just("qemu:///system"),
    kind=st.sampled_from([*KINDS, "unknown_kind"]), name=st.sampled_from([*NAMES, "other"]),
    detail=st.sampled_from([None, "crashed", "failed", "booted"]), domain=st.just("web-01"),
    uuid=st.just("u-1"),
    payload=st.sampled_from([{}, {"action": "pause"}, {"action": "report"}]),
)


def _concerned(rules: tuple[EventRule, ...], event: Event) -> list[EventRule]:
    return [r for r in rules if r.fires_on(event) or r.resolves_on(event)]


@settings(max_examples=300, deadline=None)
@given(generated=st.lists(_rules, max_size=6), events=st.lists(_events, min_size=1, max_size=8))
def test_the_index_gives_every_rule_an_event_fires_or_resolves_in_rule_order(
        generated: list[EventRule], events: list[Event]) -> None:
    """For any rules (the defaults and generated ones) and any events, each asked twice: the
    index's rules are the rules in order less some, and every rule that fires or resolves on
    the event is among them."""
    problems: list[str] = []
    rules = (*[r for r in load_rules({}, problems) if isinstance(r, EventRule)], *generated)
    assert problems == []
    index = EventRuleIndex(rules)
    for event in events + events:
        found = index.for_event(event)
        position = iter(rules)
        assert all(any(r is s for s in position) for r in found)  # a subsequence, in order
        assert _concerned(found, event) == _concerned(rules, event)
