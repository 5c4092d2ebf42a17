"""Alert rules from TOML: the shipped default set, then ``[[alerts.rules]]``, every problem listed.

A rule in the configuration with the name of a default rule replaces it; ``enabled = false``
removes it. A rule with ``metric`` is a threshold rule, one with ``match`` an event rule::

    [[alerts.rules]]
    name = "DomainCrashed"
    severity = "critical"
    summary = "Domain {domain} crashed ({name}/{detail})"
    match = [{ kind = "lifecycle", name = "stopped", detail = ["crashed", "failed"] }]
    resolve = [{ kind = "lifecycle", name = "started" }]

    [[alerts.rules]]
    name = "LibvirtdJobQueue"
    metric = "libvirt_daemon_threadpool_job_queue_depth"
    op = ">"
    value = 0
    for_cycles = 3
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from virtmon.alerts.rules import (
    EVENT_FIELDS,
    OPERATORS,
    SAME_LABELS,
    SEVERITIES,
    THRESHOLD_FIELDS,
    EventRule,
    Matcher,
    Rule,
    ThresholdRule,
    field_text,
    template_problems,
)
from virtmon.config import LONG_SECONDS, Limits, key_text

# The shipped set: config/alerts.toml, which the package carries as default_rules.toml (a
# symbolic link in the source tree, a copy in a wheel), or where a distribution installs it.
DEFAULT_RULE_FILES = (
    Path(__file__).resolve().parent / "default_rules.toml",
    Path("/usr/share/virtmon/alerts.toml"),
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_COMMON = {"name", "severity", "summary", "description", "labels", "enabled"}
_EVENT_KEYS = _COMMON | {"match", "resolve", "same", "for", "resolve_after"}
_THRESHOLD_KEYS = _COMMON | {"metric", "op", "value", "divide_by", "series", "for_cycles"}
_MATCHER_KEYS = {"kind", "name", "detail", "domain", "payload", "synthetic"}
# Documented in docs/alerts.md (a test holds them to it).
FOR_SECONDS = Limits(LONG_SECONDS.low, LONG_SECONDS.high, or_zero=True)
FOR_CYCLES = Limits(1, 1_000_000)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_problem(value: Any, limits: Limits) -> str | None:
    """Why ``value`` is not a number of seconds within ``limits``, if it is not."""
    if not _number(value):
        return f"must be a number of seconds from {limits}, not {value!r}"
    return limits.problem(value)


def _strings(value: Any, path: str, problems: list[str]) -> frozenset[str] | None:
    """A string or an array of strings, as a set."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) for item in items):
        problems.append(f"{path}: must be a string or an array of strings")
        return None
    return frozenset(items)


def _matcher(raw: Any, path: str, problems: list[str]) -> Matcher | None:
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be a table")
        return None
    before = len(problems)
    known = ", ".join(sorted(_MATCHER_KEYS))
    for key in (k for k in raw if k not in _MATCHER_KEYS):  # in the file's order
        problems.append(f"{path}.{key_text(key)}: unknown key (known: {known})")
    if not raw:
        problems.append(f"{path}: an empty matcher would match every event")
    sets = {key: _strings(raw[key], f"{path}.{key}", problems)
            for key in ("kind", "name", "detail", "domain") if key in raw}
    payload: dict[str, frozenset[str]] = {}
    raw_payload = raw.get("payload", {})
    if not isinstance(raw_payload, dict):
        problems.append(f"{path}.payload: must be a table of field = value(s)")
    else:
        for key, value in raw_payload.items():
            values = value if isinstance(value, list) else [value]
            if not values or any(isinstance(v, dict | list) for v in values):
                problems.append(f"{path}.payload.{key_text(key)}: "
                                "must be a value or an array of values")
                continue
            payload[key] = frozenset(field_text(v) for v in values)
    synthetic = raw.get("synthetic")
    if synthetic is not None and not isinstance(synthetic, bool):
        problems.append(f"{path}.synthetic: must be true or false")
    if len(problems) > before:
        return None
    domains = sets.get("domain")
    return Matcher(kinds=sets.get("kind"), names=sets.get("name"), details=sets.get("detail"),
                   domains=tuple(sorted(domains)) if domains is not None else None,
                   payload=payload, synthetic=synthetic)


def _matchers(raw: Any, path: str, problems: list[str]) -> tuple[Matcher, ...]:
    """A table or an array of tables (alternatives)."""
    items = raw if isinstance(raw, list) else [raw]
    if isinstance(raw, list) and not raw:
        problems.append(f"{path}: must not be empty")
    found = [_matcher(item, f"{path}[{i}]" if isinstance(raw, list) else path, problems)
             for i, item in enumerate(items)]
    return tuple(m for m in found if m is not None)


def _common(raw: dict[str, Any], path: str, fields: tuple[str, ...],
            problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"{path}.name: required, letters, digits and _ (not {name!r})")
    out["name"] = name
    severity = raw.get("severity", "warning")
    if severity not in SEVERITIES:
        problems.append(f"{path}.severity: must be one of {', '.join(SEVERITIES)}")
    out["severity"] = severity
    literal_name = str(name).replace("{", "{{").replace("}", "}}")
    for key, default in (("summary", literal_name), ("description", "")):
        text = raw.get(key, default)
        if not isinstance(text, str):
            problems.append(f"{path}.{key}: must be a string")
            text = default
        problems.extend(f"{path}.{key}: {p}" for p in template_problems(text, fields))
        out[key] = text
    labels = raw.get("labels", {})
    if not isinstance(labels, dict):
        problems.append(f"{path}.labels: must be a table of label = template")
        labels = {}
    for key, text in labels.items():
        if not _LABEL.match(key) or key in ("alertname", "severity", "instance"):
            problems.append(f"{path}.labels.{key_text(key)}: not a label name a rule may set")
        elif not isinstance(text, str):
            problems.append(f"{path}.labels.{key}: must be a string")
        else:
            problems.extend(f"{path}.labels.{key}: {p}" for p in template_problems(text, fields))
    out["labels"] = {k: v for k, v in labels.items() if isinstance(v, str)}
    return out


def _event_rule(raw: dict[str, Any], path: str, problems: list[str]) -> EventRule | None:
    before = len(problems)
    for key in (k for k in raw if k not in _EVENT_KEYS):
        problems.append(f"{path}.{key_text(key)}: unknown key for an event rule")
    common = _common(raw, path, EVENT_FIELDS, problems)
    match = _matchers(raw["match"], f"{path}.match", problems)
    resolve = _matchers(raw["resolve"], f"{path}.resolve", problems) if "resolve" in raw else ()
    same = raw.get("same", ["domain"])
    if not isinstance(same, list) or any(s not in SAME_LABELS for s in same):
        problems.append(f"{path}.same: must be an array of {', '.join(SAME_LABELS)}")
        same = ["domain"]
    for_seconds = raw.get("for", 0.0)
    if problem := _number_problem(for_seconds, FOR_SECONDS):
        problems.append(f"{path}.for: {problem}")
    resolve_after = raw.get("resolve_after")
    if resolve_after is not None and (problem := _number_problem(resolve_after, LONG_SECONDS)):
        problems.append(f"{path}.resolve_after: {problem}")
    if for_seconds and "resolve" not in raw:
        problems.append(f"{path}.for: needs a resolve condition (what cancels a pending alert)")
    if len(problems) > before:
        return None
    return EventRule(**common, match=match, resolve=resolve, same=tuple(same),
                     for_seconds=float(for_seconds),
                     resolve_after=float(resolve_after) if resolve_after is not None else None)


def _threshold_rule(raw: dict[str, Any], path: str, problems: list[str]) -> ThresholdRule | None:
    before = len(problems)
    for key in (k for k in raw if k not in _THRESHOLD_KEYS):
        problems.append(f"{path}.{key_text(key)}: unknown key for a threshold rule")
    common = _common(raw, path, THRESHOLD_FIELDS, problems)
    for key in ("metric", "divide_by"):
        if key in raw and (not isinstance(raw[key], str) or not _METRIC.match(raw[key])):
            problems.append(f"{path}.{key}: must be a metric name")
    op = raw.get("op", ">")
    if not isinstance(op, str) or op not in OPERATORS:  # a table or array is not hashable
        problems.append(f"{path}.op: must be one of {' '.join(OPERATORS)}")
    if "value" not in raw:
        problems.append(f"{path}.value: required")
    elif not _number(raw["value"]) or not math.isfinite(raw["value"]):
        problems.append(f"{path}.value: must be a finite number, not {raw['value']!r}")
    series = raw.get("series", {})
    if not isinstance(series, dict) or not all(isinstance(v, str) for v in series.values()):
        problems.append(f"{path}.series: must be a table of label = glob")
    for_cycles = raw.get("for_cycles", 1)
    if not isinstance(for_cycles, int) or isinstance(for_cycles, bool):
        problems.append(f"{path}.for_cycles: must be an integer from {FOR_CYCLES}")
    elif problem := FOR_CYCLES.problem(for_cycles):
        problems.append(f"{path}.for_cycles: {problem}")
    if len(problems) > before:
        return None
    return ThresholdRule(**common, metric=raw["metric"], op=op, value=float(raw["value"]),
                         divide_by=raw.get("divide_by"), series=dict(series),
                         for_cycles=for_cycles)


def parse_rule(raw: Any, path: str, problems: list[str]) -> Rule | None:
    """One rule table; problems are appended with their key paths."""
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be a table")
        return None
    if "enabled" in raw and not isinstance(raw["enabled"], bool):
        problems.append(f"{path}.enabled: must be true or false, not {raw['enabled']!r}")
        if raw.keys() <= {"name", "enabled"}:
            return None  # meant to switch a rule off: that is all there is to say
    if ("metric" in raw) == ("match" in raw):
        problems.append(f"{path}: needs exactly one of match (event rule) or metric (threshold)")
        return None
    if "metric" in raw:
        return _threshold_rule(raw, path, problems)
    return _event_rule(raw, path, problems)


def parse_rules(raw: Any, base: str, problems: list[str]) -> dict[str, Rule | None]:
    """An array of rule tables: name -> rule, or None for ``{name, enabled = false}``."""
    if not isinstance(raw, list):
        problems.append(f"{base}: must be an array of tables")
        return {}
    rules: dict[str, Rule | None] = {}
    for index, item in enumerate(raw):
        path = f"{base}[{index}]"
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name in rules:
            problems.append(f"{path}.name: {name!r} is defined twice")
            continue
        if isinstance(item, dict) and item.get("enabled") is False and isinstance(name, str) \
                and item.keys() <= {"name", "enabled"}:
            rules[name] = None  # switches off a default rule of that name
            continue
        rule = parse_rule(item, path, problems)
        if rule is not None:
            rules[rule.name] = rule if item.get("enabled", True) is not False else None
    return rules


def default_rules_file(configured: str = "") -> Path | None:
    """The shipped default rule file (or the configured one); None when none is installed."""
    if configured:
        return Path(configured)
    return next((path for path in DEFAULT_RULE_FILES if path.is_file()), None)


def load_rules(alerts: Mapping[str, Any], problems: list[str]) -> list[Rule]:
    """The enabled rules of an ``[alerts]`` table: defaults first, then the configured ones."""
    merged: dict[str, Rule | None] = {}
    if alerts.get("default_rules", True):
        path = default_rules_file(str(alerts.get("default_rules_file", "")))
        if path is None:
            problems.append("alerts.default_rules: no default rule file is installed "
                            f"(looked in {', '.join(map(str, DEFAULT_RULE_FILES))})")
        else:
            try:
                document = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                problems.append(f"alerts.default_rules_file: cannot load {path}: {exc}")
                document = {}
            merged.update(parse_rules(document.get("rules", []), f"{path}: rules", problems))
    merged.update(parse_rules(alerts.get("rules", []), "alerts.rules", problems))
    return [rule for rule in merged.values() if rule is not None]
