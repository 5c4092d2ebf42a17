"""The shipped Prometheus rules and Grafana dashboard: promtool, unit tests, and metric names."""

from __future__ import annotations

import json
import subprocess

from tests.shipped.promql import (
    DASHBOARD,
    PROMETHEUS_NAMES,
    RULE_TESTS,
    RULES,
    catalogue_from_sources,
    dashboard_expressions,
    metric_names,
    rule_expressions,
)
from tests.tools import need


def test_promtool_check_rules_accepts_the_rules_file() -> None:
    """`promtool check rules` finds every rule valid."""
    promtool = need("promtool")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """`promtool test rules`: every alert fires when it should and stays quiet otherwise."""
    promtool = need("promtool")
    result = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], capture_output=True,
                            text=True, timeout=120, check=False, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    """Each alert of the rules file appears in the unit tests with an expected firing alert."""
    tests = RULE_TESTS.read_text(encoding="utf-8")
    for alert in rule_expressions():
        assert f"alertname: {alert}\n        exp_alerts:\n          - exp_labels" in tests, alert


def test_metric_name_extraction() -> None:
    """Names come out of selectors; functions, label lists, matchers and ranges do not."""
    expr = ('sum by (instance, domain) (rate(libvirt_domain_vcpu_delay_seconds_total'
            '{instance=~"$instance",domain=~"a|b"}[$__rate_interval])) / on (instance, domain) '
            'group_left libvirt_domain_vcpu_current > bool 0 and time() - x_y offset 5m')
    assert metric_names(expr) == {"libvirt_domain_vcpu_delay_seconds_total",
                                  "libvirt_domain_vcpu_current", "x_y"}


def test_rules_and_dashboard_use_only_exported_metric_names() -> None:
    """Every name in a rule or dashboard expression is in virtmon's catalogue (or is `up`)."""
    catalogue = catalogue_from_sources() | PROMETHEUS_NAMES
    unknown = {
        where: sorted(metric_names(expr) - catalogue)
        for where, expr in {**rule_expressions(), **dashboard_expressions()}.items()
        if metric_names(expr) - catalogue
    }
    assert unknown == {}


def test_dashboard_covers_host_domains_events_and_libvirtd() -> None:
    """Rows for the host, per-domain CPU/memory and disk/network, events, libvirtd; unique ids."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Host overview", "Domains: CPU and memory", "Domains: disk and network",
                    "Events and alerts", "libvirtd health"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p.get("targets") for p in board["panels"] if p["type"] != "row")
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "instance", "domain"}
