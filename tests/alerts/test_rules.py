"""Rules: matching, templates, validation with key paths, the shipped default set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from virtmon import config, configfile
from virtmon.alerts.ruleconfig import load_rules, parse_rule
from virtmon.alerts.rules import EventRule, Matcher, render, template_problems
from virtmon.events.model import Event


def ev(kind: str, name: str, detail: str | None = None, domain: str | None = "web-01",
       **payload: Any) -> Event:
    """An event as the bus delivers it."""
    return Event(time=1000.0, uri="qemu:///system", kind=kind, name=name, detail=detail,
                 domain=domain, uuid="u-1", payload=payload, seq=7)


def rule(raw: dict[str, Any]) -> Any:
    """Parse one rule table, failing the test on problems."""
    problems: list[str] = []
    parsed = parse_rule(raw, "r", problems)
    assert problems == []
    return parsed


def test_matcher_fields_are_anded_and_values_are_alternatives() -> None:
    """kind, name, detail, domain glob and payload fields must all match; lists are ORs."""
    m = Matcher(kinds=frozenset({"lifecycle"}), names=frozenset({"stopped"}),
                details=frozenset({"crashed", "failed"}), domains=("web-*",),
                payload={"event_code": frozenset({"5"})})
    assert m.matches(ev("lifecycle", "stopped", "failed", event_code=5))
    assert not m.matches(ev("lifecycle", "stopped", "destroyed", event_code=5))
    assert not m.matches(ev("lifecycle", "stopped", "failed", domain="db-01", event_code=5))
    assert not m.matches(ev("lifecycle", "stopped", "failed", event_code=4))
    assert not m.matches(ev("lifecycle", "stopped", "failed"))  # payload field absent
    assert not m.matches(ev("lifecycle", "stopped", "failed", domain=None, event_code=5))


def test_payload_matches_nested_fields_and_non_strings() -> None:
    """Dotted payload paths reach nested values; numbers and booleans compare as JSON."""
    m = Matcher(payload={"params.operation": frozenset({"3"}), "ok": frozenset({"true"})})
    assert m.matches(ev("job_completed", "job_completed", params={"operation": 3}, ok=True))
    assert not m.matches(ev("job_completed", "job_completed", params={"operation": 2}, ok=True))


def test_templates_render_event_fields_and_tolerate_missing_ones() -> None:
    """Templates fill event fields and payload keys; a missing key is '?', never an error."""
    fields = {"domain": "web-01", "payload": {"dev": "vda"}, "value": 0.9531, "detail": None}
    assert render("{domain}: {payload[dev]} {value:.0%}", fields) == "web-01: vda 95%"
    assert render("{payload[nope]} {detail}", fields) == "? "
    assert render("{value:d}", fields) == "0.9531"  # a bad format spec falls back


def test_templates_refuse_attribute_access_and_unknown_names() -> None:
    """A template may only read data: attributes and unknown names are load-time problems."""
    allowed = ("domain", "payload")
    assert template_problems("{domain.__class__}", allowed)
    assert template_problems("{payload[x].y}", allowed)
    assert template_problems("{secret}", allowed)
    assert template_problems("{domain", allowed)
    assert template_problems("{domain} {payload[a]}", allowed) == []


def test_event_rule_labels_fingerprint_inputs_and_resolve_scope() -> None:
    """Alert labels carry alertname, severity, instance, domain, uri and templated labels."""
    r: EventRule = rule({"name": "IO", "match": {"kind": "io_error"},
                         "labels": {"device": "{payload[dev_alias]}"},
                         "resolve": {"kind": "lifecycle", "name": "resumed"}})
    labels = r.alert_labels(ev("io_error", "io_error", dev_alias="virtio-disk0"), "hv1")
    assert labels == {"alertname": "IO", "severity": "warning", "instance": "hv1",
                      "domain": "web-01", "uri": "qemu:///system", "device": "virtio-disk0"}
    assert r.resolves_on(ev("lifecycle", "resumed"))
    assert r.same_as(labels, ev("lifecycle", "resumed"))
    assert not r.same_as(labels, ev("lifecycle", "resumed", domain="other"))


def test_every_problem_is_reported_with_its_key_path() -> None:
    """Bad rules and receivers: every problem at once, each with its key path."""
    raw = {"alerts": {
        "rules": [
            {"name": "bad name", "severity": "loud", "match": {"kind": 3, "colour": "x"}},
            {"name": "T", "metric": "libvirt_up", "op": "~", "for_cycles": 0,
             "summary": "{nope}"},
            {"name": "Both", "metric": "m", "match": {"kind": "x"}},
            {"name": "Dup", "match": {"kind": "watchdog"}},
            {"name": "Dup", "match": {"kind": "watchdog"}},
            {"name": "F", "match": {"kind": "connection"}, "for": 5},
        ],
        "receivers": [
            {"name": "r", "kind": "smtp", "urls": ["ftp://x"], "batch_size": 0,
             "hmac_secret_file": "/nonexistent/secret", "colour": 1},
            {"name": "r", "kind": "json", "urls": []},
        ],
    }}
    with pytest.raises(config.ConfigError) as caught:
        configfile.build(raw)
    problems = caught.value.problems
    expected = [
        "alerts.rules[0].name:", "alerts.rules[0].severity:", "alerts.rules[0].match.kind:",
        "alerts.rules[0].match.colour: unknown key", "alerts.rules[1].op:",
        "alerts.rules[1].for_cycles:", "alerts.rules[1].value: required",
        "alerts.rules[1].summary: {nope}", "alerts.rules[2]: needs exactly one",
        "alerts.rules[4].name: 'Dup' is defined twice", "alerts.rules[5].for: needs a resolve",
        "alerts.receivers[0].kind:", "alerts.receivers[0].urls[0]:",
        "alerts.receivers[0].batch_size:", "alerts.receivers[0].hmac_secret_file: cannot read",
        "alerts.receivers[0].colour: unknown key", "alerts.receivers[1].urls: must not be empty",
        "alerts.receivers[1].name: 'r' is used by another receiver",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)


def test_check_config_exits_78_on_a_bad_rule(tmp_path: Path) -> None:
    """virtmon check-config lists a bad rule with its key path and exits 78 (EX_CONFIG)."""
    path = tmp_path / "bad.toml"
    path.write_text('[[alerts.rules]]\nname = "X"\nmatch = { kind = "lifecycle" }\n'
                    'summary = "{domain.__init__}"\n')
    done = subprocess.run([sys.executable, "-m", "virtmon.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78
    assert "alerts.rules[0].summary: {domain.__init__}: attribute access" in done.stderr


def test_default_rule_set_loads_and_covers_the_issue() -> None:
    """The shipped config/alerts.toml is valid and holds every rule the issue asks for."""
    problems: list[str] = []
    names = {r.name for r in load_rules({}, problems)}
    assert problems == []
    assert {"DomainCrashed", "DomainPausedOnIOError", "DomainWatchdogFired",
            "DomainBlockThresholdCrossed", "DomainMemoryFailure", "DomainControlError",
            "GuestAgentDisconnected", "DomainBlockJobFailed", "DomainMigrationFailed",
            "LibvirtConnectionLost", "LibvirtdThreadPoolSaturated", "LibvirtdClientsNearMax",
            "DomainStatsIncomplete", "DomainDiskAllocationHigh"} <= names


def test_configured_rule_replaces_or_disables_a_default() -> None:
    """A configured rule with a default's name replaces it; {name, enabled=false} removes it."""
    problems: list[str] = []
    rules = {r.name: r for r in load_rules({"rules": [
        {"name": "DomainCrashed", "severity": "info", "match": {"kind": "lifecycle"}},
        {"name": "DomainWatchdogFired", "enabled": False},
    ]}, problems)}
    assert problems == []
    assert rules["DomainCrashed"].severity == "info"
    assert "DomainWatchdogFired" not in rules
    assert load_rules({"default_rules": False}, problems) == []


def test_default_crash_rule_fires_on_kill_9_and_resolves_on_start() -> None:
    """DomainCrashed matches lifecycle stopped/failed (kill -9) and resolves on started."""
    rules = {r.name: r for r in load_rules({}, [])}
    crashed = rules["DomainCrashed"]
    assert isinstance(crashed, EventRule)
    assert crashed.fires_on(ev("lifecycle", "stopped", "failed"))
    assert crashed.fires_on(ev("lifecycle", "crashed", "panicked"))
    assert not crashed.fires_on(ev("lifecycle", "stopped", "destroyed"))
    assert crashed.resolves_on(ev("lifecycle", "started", "booted"))
