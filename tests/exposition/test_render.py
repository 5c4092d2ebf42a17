"""The text and OpenMetrics renderers: escaping, values, de-duplication, parser agreement."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as _parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from structlog.testing import capture_logs

from virtmon.exposition.family import MetricFamily
from virtmon.exposition.render import LabelStrings, format_value, render_openmetrics, render_text

# Label values as libvirt can hand them over: any valid Unicode (no lone surrogates).
label_values = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)


def parse_openmetrics(text: str) -> Iterator[Metric]:
    """prometheus_client's OpenMetrics parser (untyped upstream)."""
    families: Iterator[Metric] = _parse_openmetrics(text)  # type: ignore[no-untyped-call]
    return families


def _family(*samples: tuple[tuple[str, ...], float]) -> MetricFamily:
    family = MetricFamily("t_bytes", "gauge", "Test.", ("domain",))
    for labels, value in samples:
        family.add(labels, value)
    return family


@settings(max_examples=300, deadline=None)
@given(value=label_values)
def test_label_values_round_trip_text(value: str) -> None:
    """Any domain name (quotes, backslashes, newlines, non-ASCII) round-trips the text format."""
    rendered = render_text([_family(((value,), 1))]).decode("utf-8")
    (parsed,) = parse_text(rendered)
    assert [s.labels for s in parsed.samples] == [{"domain": value}]


@settings(max_examples=300, deadline=None)
@given(value=label_values)
def test_label_values_round_trip_openmetrics(value: str) -> None:
    """Any domain name round-trips through the OpenMetrics parser too."""
    rendered = render_openmetrics([_family(((value,), 1))]).decode("utf-8")
    (parsed,) = parse_openmetrics(rendered)
    assert [s.labels for s in parsed.samples] == [{"domain": value}]


def test_escapes_exactly_backslash_quote_newline() -> None:
    """Label values escape \\, " and newline; non-ASCII is emitted as UTF-8 unescaped."""
    rendered = render_text([_family((('a"b\\c\nd ü日',), 1))])
    assert rendered.splitlines()[-1] == 't_bytes{domain="a\\"b\\\\c\\nd ü日"} 1'.encode()


def test_help_escaping_per_format() -> None:
    """HELP escapes backslash and newline (text) plus double quote (OpenMetrics), and parses."""
    family = MetricFamily("h", "gauge", 'a\\b\nc "q"')
    family.add((), 1)
    text = render_text([family]).decode()
    om = render_openmetrics([family]).decode()
    assert text.startswith('# HELP h a\\\\b\\nc "q"\n')
    assert om.startswith('# HELP h a\\\\b\\nc \\"q\\"\n')
    assert next(iter(parse_text(text))).documentation == 'a\\b\nc "q"'
    assert next(iter(parse_openmetrics(om))).documentation == 'a\\b\nc "q"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (12345678901234567890, "12345678901234567890"),
        (-3, "-3"),
        (True, "1"),
        (False, "0"),
        (1.5, "1.5"),
        (1e-06, "1e-06"),
        (2.0, "2.0"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_value_formatting(value: float, expected: str) -> None:
    """Ints render as ints, floats shortest round-trip, specials as +Inf/-Inf/NaN."""
    assert format_value(value) == expected
    rendered = render_text([_family((("d",), value))]).decode()
    assert rendered.endswith(f"}} {expected}\n")


def test_duplicate_series_are_dropped_first_wins() -> None:
    """Two samples with the same labels render once (the first) and the drop is logged."""
    with capture_logs() as logs:
        rendered = render_text([_family((("d",), 1), (("d",), 2), (("e",), 3))])
    assert rendered.decode().splitlines()[2:] == ['t_bytes{domain="d"} 1', 't_bytes{domain="e"} 3']
    assert logs == [
        {
            "component": "exposition",
            "event": "virtmon.exposition.duplicate_series",
            "dropped": 1,
            "log_level": "warning",
        }
    ]


def test_same_family_twice_is_merged_and_clash_dropped() -> None:
    """Same name and type: one block; same name other type, or an OpenMetrics clash: dropped."""
    a = _family((("a",), 1))
    b = _family((("b",), 2))
    other = MetricFamily("t_bytes", "untyped", "Other.", ("domain",))
    other.add(("c",), 3)
    gauge = MetricFamily("c", "gauge", "G.")
    gauge.add((), 1)
    counter = MetricFamily("c_total", "counter", "C.")
    counter.add((), 2)
    with capture_logs() as logs:
        rendered = render_text([a, other, b, gauge, counter]).decode()
    assert rendered.count("# TYPE t_bytes") == 1
    assert 't_bytes{domain="b"} 2' in rendered
    assert 'domain="c"' not in rendered
    assert "c_total" not in rendered
    assert [log["event"] for log in logs] == ["virtmon.exposition.family_clash"] * 2


def test_openmetrics_structure() -> None:
    """OpenMetrics: counter/info family names lose _total/_info, untyped is unknown, # EOF."""
    counter = MetricFamily("x_seconds_total", "counter", "C.", ("domain",))
    counter.add(("d",), 1.5)
    info = MetricFamily("x_info", "info", "I.", ("domain", "uuid"))
    info.add(("d", "u"), 1)
    untyped = MetricFamily("y", "untyped", "U.")
    untyped.add((), 7)
    empty = MetricFamily("z", "gauge", "Empty.")
    om = render_openmetrics([counter, info, untyped, empty]).decode()
    assert om == (
        "# HELP x_seconds C.\n# TYPE x_seconds counter\n"
        'x_seconds_total{domain="d"} 1.5\n'
        "# HELP x I.\n# TYPE x info\n"
        'x_info{domain="d",uuid="u"} 1\n'
        "# HELP y U.\n# TYPE y unknown\ny 7\n"
        "# EOF\n"
    )
    assert [(f.name, f.type) for f in parse_openmetrics(om)] == [
        ("x_seconds", "counter"),
        ("x", "info"),
        ("y", "unknown"),
    ]
    text = render_text([counter, info]).decode()
    assert "# TYPE x_seconds_total counter\n" in text
    assert "# TYPE x_info gauge\n" in text
    assert "# EOF" not in text


class _Adapter:
    """Feeds our families to prometheus_client (its custom-collector interface)."""

    def __init__(self, families: list[MetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            metric: Metric
            if family.type == "counter":
                metric = CounterMetricFamily(
                    family.name, family.help, labels=list(family.label_names)
                )
            elif family.type == "info":
                metric = InfoMetricFamily(family.name[:-5], family.help, labels=[])
                for values, _ in family.samples:
                    metric.add_metric([], dict(zip(family.label_names, values, strict=True)))
                yield metric
                continue
            else:
                metric = GaugeMetricFamily(
                    family.name, family.help, labels=list(family.label_names)
                )
            for values, value in family.samples:
                metric.add_metric(list(values), value)
            yield metric


def test_same_samples_as_prometheus_client() -> None:
    """Our text output parses to exactly the samples of prometheus_client's generate_latest."""
    counter = MetricFamily("a_seconds_total", "counter", "A.", ("domain", "vcpu"))
    counter.add(('we"ird\\\n', "0"), 1.25)
    counter.add(("ü", "1"), 3)
    gauge = MetricFamily("b_bytes", "gauge", "B with \\ and\nnewline.", ("domain",))
    gauge.add(("x",), 2**40)
    gauge.add(("y",), math.inf)
    info = MetricFamily("c_info", "info", "C.", ("domain", "uuid"))
    info.add(("x", "u-1"), 1)
    families = [counter, gauge, info]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Adapter(families))

    def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for f in parse_text(text)
            for s in f.samples
        }

    ours = render_text(families).decode()
    theirs = generate_latest(registry).decode()
    assert samples(ours) == samples(theirs)


def test_carried_label_strings_change_no_byte_and_keep_only_the_last_render() -> None:
    """Renders that carry label strings reuse the last one's, give the bytes a fresh render
    gives, in both formats, and drop the strings of series that vanished."""
    def state(*domains: str) -> MetricFamily:
        family = MetricFamily("t_state", "gauge", "Test.", ("domain", "state"))
        for domain in domains:
            family.add((domain, "running"), 1)
            family.add((domain, "paused"), 0)
        return family

    carried = LabelStrings()
    built = []
    for families in ([state("a", "b"), _family((("a",), 1))],
                     [state("b", 'c"q'), _family((("b",), 2))],
                     [state("b")]):
        assert render_text(families, carried=carried) == render_text(families)
        assert render_openmetrics(families, carried=carried) == render_openmetrics(families)
        built.append(carried.last[("domain", "state")][("b", "paused")])
    assert built[0] is built[1] is built[2]  # built once, then carried
    assert carried.last == {("domain", "state"): {("b", "running"): '{domain="b",state="running"}',
                                                  ("b", "paused"): '{domain="b",state="paused"}'}}
