"""Alert rules: what fires an alert, what resolves it, and how its messages read.

Two kinds of rule. An :class:`EventRule` fires on a journaled event that one of its matchers
accepts and resolves on a later event that one of its resolve matchers accepts for the same
``domain`` (or after ``resolve_after`` seconds for one-shot events such as a watchdog). With
``for_seconds`` it waits that long before firing, and a resolving event in the meantime cancels
it (a libvirt connection lost for 5 s and back is no alert). A :class:`ThresholdRule` compares
one metric family of each collection cycle (optionally divided by another, joined on equal
labels) with a value; a series that stays beyond it in ``for_cycles`` readings fires, one that
comes back (or vanishes) resolves.

Templates are ``str.format`` strings over a fixed set of names (``{domain}``,
``{payload[dev]}``, ``{labels[server]}``, ``{value:.1f}``); attribute access is refused when the
rule is loaded, so a template can only read data, and a missing field renders as ``?``.
"""

from __future__ import annotations

import fnmatch
import json
import operator
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from virtmon.events.model import Event

SEVERITIES = ("critical", "warning", "info")
EVENT_FIELDS = ("kind", "name", "detail", "domain", "uuid", "uri", "time", "seq", "synthetic",
                "payload", "host", "labels")
THRESHOLD_FIELDS = ("metric", "value", "threshold", "labels", "host", "cycles", "op")
# Labels a resolving event can be compared on: the ones every event-rule alert may carry.
SAME_LABELS = ("domain", "uri")
OPERATORS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}
MISSING = "?"


def field_text(value: Any) -> str:
    """How a payload or label value compares with a matcher's strings (JSON for non-strings)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def payload_field(payload: Mapping[str, Any], dotted: str) -> Any:
    """A field of a payload by dotted path (``params.operation``); KeyError when absent."""
    value: Any = payload
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


@dataclass(frozen=True, slots=True)
class Matcher:
    """Accepts an event when every given field matches (None: any); values are alternatives."""

    kinds: frozenset[str] | None = None
    names: frozenset[str] | None = None
    details: frozenset[str] | None = None
    domains: tuple[str, ...] | None = None  # globs
    payload: Mapping[str, frozenset[str]] = field(default_factory=dict)
    synthetic: bool | None = None

    def may_match(self, kind: str, name: str) -> bool:
        """Whether an event of this kind and name can pass (its other fields decide)."""
        return ((self.kinds is None or kind in self.kinds)
                and (self.names is None or name in self.names))

    def matches(self, event: Event) -> bool:
        """True when the event passes every condition."""
        if self.kinds is not None and event.kind not in self.kinds:
            return False
        if self.names is not None and event.name not in self.names:
            return False
        if self.details is not None and (event.detail or "") not in self.details:
            return False
        if self.synthetic is not None and event.synthetic is not self.synthetic:
            return False
        if self.domains is not None and not (
            event.domain is not None
            and any(fnmatch.fnmatchcase(event.domain, glob) for glob in self.domains)
        ):
            return False
        for key, accepted in self.payload.items():
            try:
                value = payload_field(event.payload, key)
            except KeyError:
                return False
            if field_text(value) not in accepted:
                return False
        return True


class _Formatter(string.Formatter):
    """str.format that renders a missing field as ``?`` instead of raising."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        try:
            return super().get_field(field_name, args, kwargs)
        except (KeyError, IndexError, TypeError, AttributeError):
            return MISSING, field_name

    def format_field(self, value: Any, format_spec: str) -> Any:
        try:
            return super().format_field(value, format_spec)
        except (ValueError, TypeError):
            return super().format_field(value, "")

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if value is None and conversion is None:
            return ""
        return super().convert_field(value, conversion)


_FORMATTER = _Formatter()


def template_problems(text: str, allowed: tuple[str, ...]) -> list[str]:
    """What is wrong with a template: syntax, unknown names, attribute access."""
    problems: list[str] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return [f"bad template: {exc}"]
    for _literal, name, spec, _conv in parsed:
        if name is None:
            continue
        if "." in name.split("[", 1)[0] or "]." in name:
            problems.append(f"{{{name}}}: attribute access is not allowed, use [key]")
            continue
        root = name.split("[", 1)[0]
        if root not in allowed:
            problems.append(f"{{{name}}}: unknown field {root!r} (known: {', '.join(allowed)})")
        if spec and "{" in spec:
            problems.append(f"{{{name}}}: nested fields in a format spec are not allowed")
    return problems


def render(text: str, fields: Mapping[str, Any]) -> str:
    """Fill a validated template; never raises on data."""
    try:
        return _FORMATTER.vformat(text, (), dict(fields))
    except (ValueError, IndexError, KeyError):
        return text


def event_fields(event: Event, host: str,
                 labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The names an event rule's templates may use."""
    return {
        "kind": event.kind, "name": event.name, "detail": event.detail, "domain": event.domain,
        "uuid": event.uuid, "uri": event.uri, "time": event.time, "seq": event.seq,
        "synthetic": event.synthetic, "payload": dict(event.payload), "host": host,
        "labels": dict(labels or {}),
    }


@dataclass(frozen=True, slots=True)
class RuleBase:
    """What every rule has: a name (the ``alertname`` label), severity, labels and messages."""

    name: str
    severity: str
    summary: str
    description: str
    labels: Mapping[str, str]  # extra labels, templates


@dataclass(frozen=True, slots=True)
class EventRule(RuleBase):
    """Fires on a matching event; resolves on a resolving event or after ``resolve_after``."""

    match: tuple[Matcher, ...]
    resolve: tuple[Matcher, ...] = ()
    same: tuple[str, ...] = ("domain",)
    for_seconds: float = 0.0
    resolve_after: float | None = None

    def fires_on(self, event: Event) -> bool:
        """True when one of the rule's matchers accepts the event."""
        return any(m.matches(event) for m in self.match)

    def resolves_on(self, event: Event) -> bool:
        """True when one of the resolve matchers accepts the event."""
        return any(m.matches(event) for m in self.resolve)

    def may_concern(self, kind: str, name: str) -> bool:
        """Whether an event of this kind and name can fire or resolve the rule."""
        return any(m.may_match(kind, name) for m in (*self.match, *self.resolve))

    def alert_labels(self, event: Event, host: str) -> dict[str, str]:
        """The labels of the alert this event raises (its identity: the fingerprint's input)."""
        labels = {"alertname": self.name, "severity": self.severity, "instance": host}
        if event.domain is not None:
            labels["domain"] = event.domain
        labels["uri"] = event.uri
        fields = event_fields(event, host, labels)
        for key, template in self.labels.items():
            labels[key] = render(template, fields)
        return labels

    def same_as(self, alert_labels: Mapping[str, str], event: Event) -> bool:
        """True when the resolving event concerns the alert (equal ``same`` labels)."""
        own = {"domain": event.domain, "uri": event.uri}
        return all(alert_labels.get(key) == own.get(key) for key in self.same)


class EventRuleIndex:
    """Event rules in order, and for an event's kind and name the ones that may concern it.

    Every event went through every rule's matchers: eleven default rules, seventeen matcher
    calls an event, most of the alert engine's work in an event storm. Kinds and names are few
    (the catalog's), so the rules of each pair are found once and kept.
    """

    def __init__(self, rules: Iterable[EventRule]) -> None:
        self.rules = tuple(rules)
        self._by_kind_name: dict[tuple[str, str], tuple[EventRule, ...]] = {}

    def for_event(self, event: Event) -> tuple[EventRule, ...]:
        """The rules, in order, that may fire or resolve on ``event``."""
        key = (event.kind, event.name)
        rules = self._by_kind_name.get(key)
        if rules is None:
            if len(self._by_kind_name) >= MAX_INDEXED_PAIRS:  # names outside the catalog
                self._by_kind_name.clear()
            rules = tuple(rule for rule in self.rules if rule.may_concern(*key))
            self._by_kind_name[key] = rules
        return rules


# Bounds EventRuleIndex: the catalog's kinds and names are a few hundred pairs.
MAX_INDEXED_PAIRS = 4096


@dataclass(frozen=True, slots=True)
class ThresholdRule(RuleBase):
    """Compares a metric (or a ratio of two) with a value on each cycle, per series."""

    metric: str
    op: str
    value: float
    divide_by: str | None = None
    series: Mapping[str, str] = field(default_factory=dict)  # label -> glob
    for_cycles: int = 1

    def compare(self, value: float) -> bool:
        """True when the value is beyond the threshold."""
        return OPERATORS[self.op](value, self.value)

    def selects(self, labels: Mapping[str, str]) -> bool:
        """True when a series' labels match every ``series`` glob."""
        return all(fnmatch.fnmatchcase(labels.get(k, ""), g) for k, g in self.series.items())


Rule = EventRule | ThresholdRule
