"""Render metric families to Prometheus text format 0.0.4 and to OpenMetrics 1.0.

Rendering happens once per form and collection cycle, so it is written for speed: each family's
header is built once, each distinct label-value tuple is escaped once per render (a domain's
``{domain="web-01"}`` is shared by every family with the same label names) and, given a
`CarriedSeries`, a series the last render wrote is not built again: its line up to the value is
reused, and a family whose values have not moved either is not written again at all. Values are
formatted in C where a family's are all ints or all finite floats, and the output is joined
once.

Guarantees: no duplicate series (the first sample of a series wins), no two families with the
same name (same type: merged; different type: the later one dropped), no two OpenMetrics
families that clash after suffix stripping, empty families omitted. Every drop is logged.

A prometheus_client registry may be passed too (the ``process_*`` series): prometheus_client
renders it after the families, and a family that would clash with one of its names is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from virtmon.exposition.family import LabelValues, MetricFamily

__all__ = [
    "CONTENT_TYPE_OPENMETRICS",
    "CONTENT_TYPE_TEXT",
    "CarriedSeries",
    "escape_help_openmetrics",
    "escape_help_text",
    "escape_label_value",
    "format_value",
    "render_openmetrics",
    "render_text",
]

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_log = structlog.get_logger(component="exposition")

# OpenMetrics family name = sample name minus this suffix.
_OM_SUFFIX = {"counter": "_total", "info": "_info"}
# Text format 0.0.4 has no info type: an info metric is a gauge with value 1.
_TEXT_TYPE = {"gauge": "gauge", "counter": "counter", "info": "gauge", "untyped": "untyped"}
_OM_TYPE = {"gauge": "gauge", "counter": "counter", "info": "info", "untyped": "unknown"}
# A sample's label values and value (a loop in C with map).
_label_values = itemgetter(0)
_value = itemgetter(1)


def escape_label_value(value: str) -> str:
    """Escape backslash, double quote and newline, the three characters both formats escape."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help_text(text: str) -> str:
    """Escape HELP for text format 0.0.4 (backslash and newline only)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_help_openmetrics(text: str) -> str:
    """Escape HELP for OpenMetrics (backslash, newline and double quote)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    """Format a sample value: ints as ints, floats shortest round-trip, `+Inf`, `-Inf`, `NaN`."""
    kind: type = type(value)  # annotated so mypy does not narrow `value` through it
    if kind is int:
        return str(value)
    if kind is bool:
        return "1" if value else "0"
    value = float(value)
    if value - value == 0.0:  # finite
        return repr(value)
    if value != value:
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def _label_string(names: tuple[str, ...], values: LabelValues) -> str:
    if not names:
        return ""
    parts = []
    for name, value in zip(names, values, strict=True):
        if type(value) is not str:
            value = str(value)
        parts.append(f'{name}="{escape_label_value(value)}"')
    return "{" + ",".join(parts) + "}"


@dataclass(frozen=True, slots=True)
class _Series:
    """One sample name's series as a render wrote them: the label values in sample order and,
    for each, the line up to its value (``"\\nname{...} "``); the values, their one type (None
    if mixed) and the lines they made, encoded."""

    keys: list[LabelValues]
    prefixes: list[str]
    distinct: bool  # no two prefixes alike (no duplicate series to drop)
    values: list[float]
    kind: type | None
    lines: bytes
    dropped: int  # samples left out as duplicates of a series written before them

    def writes_alike(self, values: list[float], kind: type | None) -> bool:
        """Whether ``values`` (all of type ``kind``) would be written as these were: equal
        values of one type, where equal values are written alike. That is every int and bool,
        and every float but zero: ``-0.0 == 0.0``, and 1 == 1.0 is why the types must match."""
        return (kind is self.kind and kind in _ALIKE_WHEN_EQUAL and values == self.values
                and (kind is not float or 0.0 not in values))


_ALIKE_WHEN_EQUAL = frozenset({int, bool, float})


class CarriedSeries:
    """The series of one render, carried to the next.

    A host's series change little between cycles: the same domains and devices in the same
    order, only the values move, and many do not (states, sizes, counts, the info series). A
    render whose sample name has the label values of the last render's, in the same order (one
    list comparison in C), reuses that render's lines up to the value and writes only the
    values; with the same values too, it reuses the lines whole; otherwise it looks each series
    up among the last render's and builds only the new ones. Only what the last render wrote is
    kept (its lines: about the size of one uncompressed body); a vanished domain's lines go with
    the render after it. Both formats write the same sample lines, so text and OpenMetrics
    renders share them.
    """

    def __init__(self) -> None:
        # sample name -> its series as the last render wrote them.
        self.last: dict[str, _Series] = {}


def _prefixes(name: str, names: tuple[str, ...], keys: list[LabelValues],
              last: _Series | None, label_strings: dict[LabelValues, str]) -> list[str]:
    """Each series' line up to its value: the last render's where it had the series, else
    built (``label_strings``: the label strings this render built for these label names)."""
    known = dict(zip(last.keys, last.prefixes, strict=True)) if last is not None else {}
    known_get, labels_get = known.get, label_strings.get
    prefixes: list[str] = []
    append = prefixes.append
    for values in keys:
        prefix = known_get(values)
        if prefix is None:
            labels = labels_get(values)
            if labels is None:
                labels = label_strings[values] = _label_string(names, values)
            prefix = f"\n{name}{labels} "
        append(prefix)
    return prefixes


def _first_of_each(prefixes: list[str], values: list[float]) -> tuple[list[str], list[float]]:
    """The samples whose series has not come before (the first sample of a series wins)."""
    seen: set[str] = set()
    kept_prefixes: list[str] = []
    kept_values: list[float] = []
    for prefix, value in zip(prefixes, values, strict=True):
        if prefix not in seen:
            seen.add(prefix)
            kept_prefixes.append(prefix)
            kept_values.append(value)
    return kept_prefixes, kept_values


_int_repr = int.__repr__
_float_repr = float.__repr__


def _formatted(values: list[float], kind: type | None) -> Iterable[str]:
    """`format_value` of each value, in C where ``kind``, the values' one type, is int, or
    float and they are all finite (a float sum is finite only if every term is)."""
    if kind is int:
        return map(_int_repr, values)
    if kind is float:
        total = sum(values)
        if total - total == 0.0:
            return map(_float_repr, values)
    return map(format_value, values)


def _series(keys: list[LabelValues], prefixes: list[str], distinct: bool,
            values: list[float], kind: type | None) -> _Series:
    """The series with their lines written: each prefix and its formatted value, joined once,
    the first of each series only."""
    kept_prefixes, kept_values = ((prefixes, values) if distinct
                                  else _first_of_each(prefixes, values))
    pieces: list[str] = [""] * (2 * len(kept_prefixes))
    pieces[::2] = kept_prefixes
    pieces[1::2] = _formatted(kept_values, kind)
    lines = "".join(pieces).encode("utf-8", "replace")
    return _Series(keys, prefixes, distinct, values, kind, lines,
                   len(prefixes) - len(kept_prefixes))


def _plan(families: Iterable[MetricFamily],
          taken: Iterable[str] = ()) -> list[list[MetricFamily]]:
    """Group families by name in first-seen order; drop clashes (type, OpenMetrics name, a name
    in ``taken``)."""
    by_name: dict[str, list[MetricFamily]] = {}
    om_names: dict[str, str] = dict.fromkeys(taken, "prometheus_client")
    for family in families:
        group = by_name.get(family.name)
        if group is not None:
            first = group[0]
            if first.type == family.type and first.label_names == family.label_names:
                group.append(family)
            else:
                _log.warning("virtmon.exposition.family_clash", metric=family.name)
            continue
        suffix = _OM_SUFFIX.get(family.type)
        om_name = family.name[: -len(suffix)] if suffix else family.name
        owner = om_names.get(om_name)
        if owner is not None:
            _log.warning("virtmon.exposition.family_clash", metric=family.name, clashes=owner)
            continue
        om_names[om_name] = family.name
        by_name[family.name] = [family]
    return [group for group in by_name.values() if any(f.samples for f in group)]


def _client_names(client: CollectorRegistry | None) -> set[str]:
    """Every family and sample name ``client`` renders (none of ours may take one)."""
    if client is None:
        return set()
    return {name for metric in client.collect()
            for name in (metric.name, *(sample.name for sample in metric.samples))}


def _render(families: Iterable[MetricFamily], openmetrics: bool,
            taken: Iterable[str] = (), carried: CarriedSeries | None = None) -> bytes:
    """The families in one format, UTF-8; OpenMetrics without its closing ``# EOF``.

    Each sample name's lines are written at once: the carried (or built) ``"\\nname{...} "``
    before each value, the values formatted in C, so that a series seen before costs no Python
    step of its own; and where its series and values are those of the last render, the lines
    that render wrote are written again.
    """
    out: list[bytes] = []
    # label names -> (label values -> rendered "{...}"): what this render built.
    label_strings: dict[tuple[str, ...], dict[LabelValues, str]] = {}
    previous = carried.last if carried is not None else {}
    written: dict[str, _Series] = {}
    duplicates = 0
    for group in _plan(families, taken):
        first = group[0]
        name = first.name
        if openmetrics:
            suffix = _OM_SUFFIX.get(first.type)
            family_name = name[: -len(suffix)] if suffix else name
            header = (f"# HELP {family_name} {escape_help_openmetrics(first.help)}\n"
                      f"# TYPE {family_name} {_OM_TYPE[first.type]}")
        else:
            header = (f"# HELP {name} {escape_help_text(first.help)}\n"
                      f"# TYPE {name} {_TEXT_TYPE[first.type]}")
        out.append(header.encode("utf-8", "replace"))
        samples = first.samples if len(group) == 1 else [s for f in group for s in f.samples]
        keys = list(map(_label_values, samples))
        values = list(map(_value, samples))
        kinds = set(map(type, values))
        kind = kinds.pop() if len(kinds) == 1 else None
        last = previous.get(name)
        if last is None or last.keys != keys:
            names = first.label_names
            prefixes = _prefixes(name, names, keys, last, label_strings.setdefault(names, {}))
            series = _series(keys, prefixes, len(set(prefixes)) == len(prefixes), values, kind)
        elif last.writes_alike(values, kind):
            series = last
        else:
            series = _series(keys, last.prefixes, last.distinct, values, kind)
        written[name] = series
        duplicates += series.dropped
        out.append(series.lines)
        out.append(b"\n")
    if duplicates:
        _log.warning("virtmon.exposition.duplicate_series", dropped=duplicates)
    if carried is not None:
        carried.last = written
    return b"".join(out)


def render_text(families: Iterable[MetricFamily],
                client: CollectorRegistry | None = None,
                carried: CarriedSeries | None = None) -> bytes:
    """Prometheus text exposition format 0.0.4, UTF-8 (`CONTENT_TYPE_TEXT`), then ``client``'s
    families as prometheus_client renders them; ``carried``: the series of the last render,
    updated by this one."""
    body = _render(families, False, _client_names(client), carried)
    return body + generate_latest(client) if client is not None else body


def render_openmetrics(families: Iterable[MetricFamily],
                       client: CollectorRegistry | None = None,
                       carried: CarriedSeries | None = None) -> bytes:
    """OpenMetrics 1.0 text, UTF-8 (`CONTENT_TYPE_OPENMETRICS`), then ``client``'s families as
    prometheus_client renders them, ending in `# EOF`; ``carried`` as for `render_text`."""
    body = _render(families, True, _client_names(client), carried)
    if client is None:
        return body + b"# EOF\n"
    tail: bytes = generate_openmetrics(client)  # type: ignore[no-untyped-call]  # untyped upstream
    return body + tail
