"""Threshold rules against a plain reading of their definition, over generated families."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.alerts.test_engine import TARGETS, rules
from virtmon.alerts.engine import AlertEngine, Changes
from virtmon.alerts.rules import OPERATORS, ThresholdRule
from virtmon.alerts.store import AlertStore
from virtmon.events.journal import Journal
from virtmon.exposition.family import MetricFamily

LABELS = ("domain", "target_device")
DOMAINS = ("web-1", "web-2", "db-1")
DEVICES = ("vda", "vdb")
ENGINE_LABELS = {"alertname", "severity", "instance"}

series_values = st.tuples(st.sampled_from(DOMAINS), st.sampled_from(DEVICES))
numbers = st.one_of(st.integers(0, 10), st.floats(-5, 20, allow_nan=False))


@st.composite
def cases(draw: st.DrawFn) -> tuple[ThresholdRule, MetricFamily, MetricFamily | None]:
    """A rule, its metric's family and, for a ratio, the divisor's (its labels in either
    order, some series missing, zeros among its values)."""
    family = MetricFamily("m", "gauge", "", LABELS)
    for values in draw(st.lists(series_values, max_size=8)):
        family.add(values, draw(numbers))
    raw = {"name": "R", "metric": "m", "op": draw(st.sampled_from(sorted(OPERATORS))),
           "value": draw(st.floats(0, 10)), "summary": "{value}"}
    glob = draw(st.sampled_from(["", "web-*", "db-1", "*"]))
    if glob:
        raw["series"] = {"domain": glob}
    divisor = None
    if draw(st.booleans()):
        raw["divide_by"] = "d"
        reversed_labels = draw(st.booleans())
        divisor = MetricFamily("d", "gauge", "", LABELS[::-1] if reversed_labels else LABELS)
        for values in draw(st.lists(series_values, max_size=8)):
            divisor.add(values[::-1] if reversed_labels else values, draw(numbers))
    [rule] = rules(raw)
    assert isinstance(rule, ThresholdRule)
    return rule, family, divisor


def expected(rule: ThresholdRule, family: MetricFamily,
             divisor: MetricFamily | None) -> set[frozenset[tuple[str, str]]]:
    """The label sets beyond the threshold, read off the rule's definition: the series selected
    by its globs, divided by the divisor's series with the same labels (the last of them; none,
    or zero: no ratio), compared with the value."""
    beyond = set()
    for values, value in family.samples:
        series = dict(zip(family.label_names, values, strict=True))
        if not all(fnmatchcase(series.get(k, ""), g) for k, g in rule.series.items()):
            continue
        if rule.divide_by:
            same = [v for vs, v in (divisor.samples if divisor else [])
                    if dict(zip(divisor.label_names, vs, strict=True)) == series]  # type: ignore[union-attr]
            if not same or not same[-1]:
                continue
            value = value / same[-1]
        if OPERATORS[rule.op](value, rule.value):
            beyond.add(frozenset(series.items()))
    return beyond


@pytest.fixture(scope="module")
def engine() -> Iterator[AlertEngine]:
    """An engine on a database of its own (the rules are set by each example)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.db"
        engine = AlertEngine([], AlertStore(path), Journal(path), TARGETS, "hv1")
        yield engine
        engine.close()
        engine.store.close()
        engine.journal.close()


@settings(max_examples=400, deadline=None)
@given(case=cases())
def test_threshold_alerts_are_the_series_the_rule_describes(
    engine: AlertEngine, case: tuple[ThresholdRule, MetricFamily, MetricFamily | None]
) -> None:
    """A one-cycle rule fires for exactly the series its globs select whose value (or ratio
    to the divisor's series of the same labels, in whatever order the divisor names them) is
    beyond the threshold."""
    rule, family, divisor = case
    engine.threshold_rules = [rule]
    changes = Changes()
    engine.evaluate_thresholds([family] + ([divisor] if divisor else []), changes, {})
    fired = {frozenset((k, v) for k, v in alert.labels.items() if k not in ENGINE_LABELS)
             for alert in changes.alerts.values() if alert.state == "firing"}
    assert fired == expected(rule, family, divisor)


def notifications_of(readings: list[tuple[float, list[tuple[str, int]]] | None],
                     for_cycles: int) -> list[tuple[str, str]]:
    """The (status, domain) notifications of a ``for_cycles`` rule (value > 5) fed these
    cycles, each a reading's time and its (domain, value) samples, or None: the family absent
    (its collector failed)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.db"
        engine = AlertEngine(rules({"name": "R", "metric": "m", "op": ">", "value": 5,
                                    "for_cycles": for_cycles, "summary": "{value}"}),
                             AlertStore(path), Journal(path), TARGETS, "hv1")
        out = []
        try:
            for reading in readings:
                family = MetricFamily("m", "gauge", "", ("domain",))
                if reading is not None:
                    family.read_at, samples = reading
                    for domain, value in samples:
                        family.add((domain,), value)
                changes = Changes()
                engine.evaluate_thresholds([family] if reading is not None else [], changes)
                for alert in changes.alerts.values():  # what a commit does to the mirror
                    if alert.active:
                        engine.active[alert.fingerprint] = alert
                    else:
                        engine.active.pop(alert.fingerprint, None)
                out += sorted((n.status, n.labels["domain"]) for n in changes.notifications)
        finally:
            engine.close()
            engine.store.close()
            engine.journal.close()
    return out


readings_of = st.lists(st.lists(st.tuples(st.sampled_from(DOMAINS), st.integers(0, 10)),
                                max_size=3, unique_by=lambda s: s[0]),
                       min_size=1, max_size=8)


# After each reading, up to three cycles that carry it (True) or lack the family (False).
between = st.lists(st.lists(st.booleans(), max_size=3), min_size=8, max_size=8)


@settings(max_examples=150, deadline=None)
@given(readings=readings_of, between=between, for_cycles=st.integers(1, 3))
def test_a_reading_carried_over_cycles_changes_nothing(
    readings: list[list[tuple[str, int]]], between: list[list[bool]], for_cycles: int
) -> None:
    """Cycles that carry a reading (the admin series between two reads), or lack the family,
    give the notifications that the readings alone give: a carried reading neither counts
    again nor resolves, also after a cycle without it."""
    once: list[tuple[float, list[tuple[str, int]]] | None] = [
        (float(i), samples) for i, samples in enumerate(readings)]
    cycles = [cycle for i, reading in enumerate(once)
              for cycle in [reading, *(reading if carry else None for carry in between[i])]]
    assert notifications_of(cycles, for_cycles) == notifications_of(once, for_cycles)
