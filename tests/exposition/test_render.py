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
from virtmon.exposition.render import (
    CarriedSeries,
    escape_help_openmetrics,
    escape_help_text,
    escape_label_value,
    format_value,
    render_openmetrics,
    render_text,
)

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


def test_carried_series_change_no_byte_and_keep_only_the_last_render() -> None:
    """Renders that carry the last one's series reuse its lines, give the bytes a fresh render
    gives, in both formats, and drop the series that vanished."""
    def state(*domains: str) -> MetricFamily:
        family = MetricFamily("t_state", "gauge", "Test.", ("domain", "state"))
        for domain in domains:
            family.add((domain, "running"), 1)
            family.add((domain, "paused"), 0)
        return family

    carried = CarriedSeries()
    built = []
    for families in ([state("a", "b"), _family((("a",), 1))],
                     [state("a", "b"), _family((("a",), 2))],
                     [state("b", 'c"q'), _family((("b",), 2))],
                     [state("b")]):
        assert render_text(families, carried=carried) == render_text(families)
        assert render_openmetrics(families, carried=carried) == render_openmetrics(families)
        series = carried.last["t_state"]
        built.append(series.prefixes[series.keys.index(("b", "paused"))])
    assert built[0] is built[1] is built[2] is built[3]  # built once, then carried
    assert list(carried.last) == ["t_state"]
    assert carried.last["t_state"].keys == [("b", "running"), ("b", "paused")]


def test_carried_lines_are_written_again_only_where_every_value_writes_alike() -> None:
    """A family whose series and values are the last render's reuses that render's lines, and a
    value equal to the last but written otherwise (1 and 1.0, True and 1, 0.0 and -0.0) gets
    its own line: every render has the bytes of a fresh one."""
    def family(*values: float) -> MetricFamily:
        return MetricFamily("t_v", "gauge", "Test.", ("domain",),
                            [((f"d{i}",), value) for i, value in enumerate(values)])

    carried = CarriedSeries()
    render_text([family(1, 2)], carried=carried)
    lines = carried.last["t_v"].lines
    assert render_text([family(1, 2)], carried=carried) == render_text([family(1, 2)])
    assert carried.last["t_v"].lines is lines  # written again, not formatted again
    nan = float("nan")
    for values in ((1.0, 2.0), (1, 2), (True, 2), (1, 2), (0.0, 1.5), (-0.0, 1.5), (0.0, 1.5),
                   (nan, 1.5), (nan, 1.5), (float("inf"), 1.5), (1.5, 1.5), (1.5, 1.5)):
        assert render_text([family(*values)], carried=carried) == render_text([family(*values)])
        assert (render_openmetrics([family(*values)], carried=carried)
                == render_openmetrics([family(*values)]))


# Families as collectors make them: a name decides type and label names (so that families of
# one name merge), label values from a small set (so that series repeat and collide), every
# kind of value the renderer formats.
_NAMES = {"t_a": ("gauge", ("domain", "state")), "t_b_total": ("counter", ("domain",)),
          "t_c_info": ("info", ("domain", "uuid")), "t_d": ("untyped", ()),
          "t_e_bytes": ("gauge", ("domain",))}
_sample_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True))
_labels = st.sampled_from(["web-01", "web-02", 'q"\\\n', "ü", ""])


@st.composite
def _families(draw: st.DrawFn) -> list[MetricFamily]:
    families = []
    for name in draw(st.lists(st.sampled_from(sorted(_NAMES)), max_size=6)):
        kind, label_names = _NAMES[name]
        family = MetricFamily(name, kind, f"Help of {name} \\ \"x\"\n.", label_names)  # type: ignore[arg-type]
        for _ in range(draw(st.integers(0, 6))):
            family.add(tuple(draw(_labels) for _ in label_names), draw(_sample_values))
        families.append(family)
    return families


def _revalued(families: list[MetricFamily], values: list[float]) -> list[MetricFamily]:
    """The same series with new values (what most cycles look like)."""
    fresh = iter(values * (1 + sum(len(f.samples) for f in families)))
    return [MetricFamily(f.name, f.type, f.help, f.label_names,
                         [(labels, next(fresh)) for labels, _ in f.samples]) for f in families]


def _reference(families: list[MetricFamily], openmetrics: bool) -> bytes:
    """The exposition written plainly, one sample at a time, from the two formats' rules."""
    groups: dict[str, list[MetricFamily]] = {}
    for family in families:
        groups.setdefault(family.name, []).append(family)
    lines = []
    for name, group in groups.items():
        if not any(f.samples for f in group):
            continue
        kind = group[0].type
        if openmetrics:
            shown = name.removesuffix({"counter": "_total", "info": "_info"}.get(kind, "\0"))
            lines.append(f"# HELP {shown} {escape_help_openmetrics(group[0].help)}")
            lines.append(f"# TYPE {shown} {'unknown' if kind == 'untyped' else kind}")
        else:
            lines.append(f"# HELP {name} {escape_help_text(group[0].help)}")
            lines.append(f"# TYPE {name} {'gauge' if kind == 'info' else kind}")
        seen = set()
        for family in group:
            for values, value in family.samples:
                pairs = [f'{n}="{escape_label_value(v)}"'
                         for n, v in zip(family.label_names, values, strict=True)]
                labels = "{" + ",".join(pairs) + "}" if pairs else ""
                if labels not in seen:
                    seen.add(labels)
                    lines.append(f"{name}{labels} {format_value(value)}")
    body = "".join(line + "\n" for line in lines)
    return (body + ("# EOF\n" if openmetrics else "")).encode()


@settings(max_examples=300, deadline=None)
@given(first=_families(), values=st.lists(_sample_values, min_size=1, max_size=5),
       last=_families())
def test_render_equals_the_plain_reference_cycle_after_cycle(
        first: list[MetricFamily], values: list[float], last: list[MetricFamily]) -> None:
    """Any families, rendered cycle after cycle with the series carried (same series with new
    values, then other series), give exactly the bytes of a plain one-sample-at-a-time render."""
    carried = CarriedSeries()
    for families in (first, _revalued(first, values), last):
        with capture_logs():
            assert render_text(families, carried=carried) == _reference(families, False)
            assert render_openmetrics(families, carried=carried) == _reference(families, True)
