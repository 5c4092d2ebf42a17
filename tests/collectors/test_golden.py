"""Golden files: recorded getAllDomainStats records in, exposition text out."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as _parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.tools import need
from virtmon.collectors import COLLECTORS, build_collectors, run_collectors
from virtmon.exposition.family import MetricFamily
from virtmon.exposition.render import render_openmetrics, render_text

from .snapshots import FIXTURES, GOLDEN, load_records, make_snapshot

FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def parse_openmetrics(text: str) -> Iterator[Metric]:
    """prometheus_client's OpenMetrics parser (untyped upstream)."""
    families: Iterator[Metric] = _parse_openmetrics(text)  # type: ignore[no-untyped-call]
    return families


def _families(fixture: Path) -> list[MetricFamily]:
    """Every domain and node collector (the opt-in `vm` too) on the fixture, frozen clock.

    Admin and event counters do not come from stats records (tests/admin, tests/events).
    """
    snapshot = make_snapshot(load_records(fixture))
    names = set(COLLECTORS) - {"admin", "events"}
    families, outcomes = run_collectors(build_collectors(names), snapshot, clock=lambda: 0.0)
    assert all(o.success for o in outcomes), outcomes
    return families


def _expected_samples(
    families: list[MetricFamily],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sample name and sorted labels -> value, straight from the families."""
    expected = {}
    for family in families:
        for values, value in family.samples:
            labels = tuple(sorted(zip(family.label_names, values, strict=True)))
            expected[(family.name, labels)] = float(value)
    return expected


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda p: p.stem)
def test_golden_text(fixture: Path, update_golden: bool) -> None:
    """The text exposition of each fixture equals its golden file byte for byte."""
    rendered = render_text(_families(fixture))
    golden = GOLDEN / f"{fixture.stem}.prom"
    if update_golden:
        golden.write_bytes(rendered)
    assert golden.exists(), f"missing {golden}; run pytest tests/collectors --update-golden"
    assert rendered.decode() == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda p: p.stem)
def test_text_parser_reads_back_same_values(fixture: Path) -> None:
    """prometheus_client's text parser reads every sample back with the value collected."""
    families = _families(fixture)
    expected = _expected_samples(families)
    parsed = {}
    for family in parse_text(render_text(families).decode()):
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert parsed.keys() == expected.keys()
    for key, value in expected.items():
        assert math.isclose(parsed[key], value, rel_tol=1e-15), key


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda p: p.stem)
def test_openmetrics_parser_accepts_render(fixture: Path) -> None:
    """prometheus_client's OpenMetrics parser accepts the render and finds the same samples."""
    families = _families(fixture)
    expected = _expected_samples(families)
    parsed = {}
    types = {}
    for family in parse_openmetrics(render_openmetrics(families).decode()):
        types[family.name] = family.type
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert parsed == pytest.approx(expected, rel=1e-15)
    assert types["libvirt_domain_info_cpu_time_seconds"] == "counter"
    assert types["libvirt_domain"] == "info"


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda p: p.stem)
def test_promtool_check_metrics_reports_nothing(fixture: Path) -> None:
    """`promtool check metrics` (Prometheus's linter) finds no problem in the render."""
    result = subprocess.run(
        [need("promtool"), "check", "metrics"],
        input=render_text(_families(fixture)),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
