"""Metric names out of PromQL expressions, and the catalogue of names virtmon exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "virtmon-rules.yml"
RULE_TESTS = ROOT / "config" / "prometheus" / "virtmon-rules.test.yml"
DASHBOARD = ROOT / "config" / "grafana" / "virtmon-dashboard.json"

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan",
            # Aggregation operators: `sum by (x) (...)` puts the label list before the parenthesis.
            "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
            "bottomk", "topk", "quantile"}
# Names Prometheus itself makes (scrape metadata), not virtmon.
PROMETHEUS_NAMES = {"up"}


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects (strings, matchers, ranges, label lists removed)."""
    text = re.sub(r"\$__\w+|\$\{?\w+\}?", "1m", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1 ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS:
            continue
        names.add(name)
    return names


def rule_expressions() -> dict[str, str]:
    """Alert name -> expression, from the shipped rules file."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {rule["alert"]: rule["expr"] for group in document["groups"] for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    """"panel title / refId" -> expression, for every panel target, variable and annotation."""
    board: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found[f"{panel['title']} / {target['refId']}"] = target["expr"]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            values = re.fullmatch(r"label_values\((.*),\s*\w+\)", query["query"])
            assert values, query
            found[f"variable {variable['name']}"] = values.group(1)
    for annotation in board["annotations"]["list"]:
        found[f"annotation {annotation['name']}"] = annotation["expr"]
    return found


def catalogue_from_sources() -> set[str]:
    """Names virtmon can export: the collectors' golden files plus every literal family name."""
    names: set[str] = set()
    for golden in (ROOT / "tests" / "collectors" / "golden").glob("*.prom"):
        names |= exposition_names(golden.read_text(encoding="utf-8"))
    for source in (ROOT / "virtmon").rglob("*.py"):
        names |= set(re.findall(r'"((?:libvirt|virtmon)_[a-z0-9_]+)"', source.read_text()))
    return names


def exposition_names(text: str) -> set[str]:
    """Family and sample names of an exposition (``# TYPE`` lines and samples)."""
    names = set(re.findall(r"^# TYPE (\S+)", text, flags=re.M))
    names |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, flags=re.M))
    return names
