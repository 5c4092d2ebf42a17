"""Render metric families to Prometheus text format 0.0.4 and to OpenMetrics 1.0.

Rendering happens once per form and collection cycle, so it is written for speed: each family's
header and name prefix are built once, each distinct label-value tuple is escaped once per render (a
domain's ``{domain="web-01"}`` is shared by every family with the same label names) and, given a
`LabelStrings`, not again by the next render, floats are formatted without the general-purpose
machinery, and the output is joined once.

Guarantees: no duplicate series (the first sample of a series wins), no two families with the
same name (same type: merged; different type: the later one dropped), no two OpenMetrics
families that clash after suffix stripping, empty families omitted. Every drop is logged.

A prometheus_client registry may be passed too (the ``process_*`` series): prometheus_client
renders it after the families, and a family that would clash with one of its names is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from virtmon.exposition.family import LabelValues, MetricFamily

__all__ = [
    "CONTENT_TYPE_OPENMETRICS",
    "CONTENT_TYPE_TEXT",
    "LabelStrings",
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
    parts = []
    for name, value in zip(names, values, strict=True):
        if type(value) is not str:
            value = str(value)
        parts.append(f'{name}="{escape_label_value(value)}"')
    return "{" + ",".join(parts) + "}"


class LabelStrings:
    """Rendered ``{...}`` label strings carried from one render to the next.

    A host's series change little between cycles, and building a label string is most of a
    render's work (every series of ``libvirt_domain_state`` has a label tuple of its own), so a
    render looks up the strings the previous one built first. Only what the last render used is
    kept: a vanished domain's strings go with the render after it. Both formats escape label
    values alike, so text and OpenMetrics renders share them.
    """

    def __init__(self) -> None:
        # label names -> (label values -> rendered "{...}"), as the last render left it.
        self.last: dict[tuple[str, ...], dict[LabelValues, str]] = {}


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
            taken: Iterable[str] = (), carried: LabelStrings | None = None) -> str:
    """The families in one format; OpenMetrics without its closing ``# EOF``."""
    out: list[str] = []
    append = out.append
    # label names -> (label values -> rendered "{...}"): what this render used.
    label_cache: dict[tuple[str, ...], dict[LabelValues, str]] = {}
    previous = carried.last if carried is not None else {}
    duplicates = 0
    for group in _plan(families, taken):
        first = group[0]
        name = first.name
        if openmetrics:
            suffix = _OM_SUFFIX.get(first.type)
            family_name = name[: -len(suffix)] if suffix else name
            append(
                f"# HELP {family_name} {escape_help_openmetrics(first.help)}\n"
                f"# TYPE {family_name} {_OM_TYPE[first.type]}\n"
            )
        else:
            append(
                f"# HELP {name} {escape_help_text(first.help)}\n"
                f"# TYPE {name} {_TEXT_TYPE[first.type]}\n"
            )
        names = first.label_names
        if names:
            cache = label_cache.get(names)
            if cache is None:
                cache = label_cache[names] = {}
        else:
            cache = {(): ""}
        get = cache.get
        get_previous = previous.get(names, {}).get
        seen: set[str] = set()
        seen_add = seen.add
        for family in group:
            for values, value in family.samples:
                labels = get(values)
                if labels is None:
                    labels = get_previous(values)
                    if labels is None:
                        labels = _label_string(names, values)
                    cache[values] = labels
                if labels in seen:
                    duplicates += 1
                    continue
                seen_add(labels)
                kind: type = type(value)
                if kind is int:
                    append(f"{name}{labels} {value}\n")
                elif kind is float and value - value == 0.0:
                    append(f"{name}{labels} {value!r}\n")
                else:
                    append(f"{name}{labels} {format_value(value)}\n")
    if duplicates:
        _log.warning("virtmon.exposition.duplicate_series", dropped=duplicates)
    if carried is not None:
        carried.last = label_cache
    return "".join(out)


def render_text(families: Iterable[MetricFamily],
                client: CollectorRegistry | None = None,
                carried: LabelStrings | None = None) -> bytes:
    """Prometheus text exposition format 0.0.4, UTF-8 (`CONTENT_TYPE_TEXT`), then ``client``'s
    families as prometheus_client renders them; ``carried``: label strings from the last render,
    updated by this one."""
    body = _render(families, False, _client_names(client), carried).encode("utf-8", "replace")
    return body + generate_latest(client) if client is not None else body


def render_openmetrics(families: Iterable[MetricFamily],
                       client: CollectorRegistry | None = None,
                       carried: LabelStrings | None = None) -> bytes:
    """OpenMetrics 1.0 text, UTF-8 (`CONTENT_TYPE_OPENMETRICS`), then ``client``'s families as
    prometheus_client renders them, ending in `# EOF`; ``carried`` as for `render_text`."""
    body = _render(families, True, _client_names(client), carried).encode("utf-8", "replace")
    if client is None:
        return body + b"# EOF\n"
    tail: bytes = generate_openmetrics(client)  # type: ignore[no-untyped-call]  # untyped upstream
    return body + tail
