"""The metric family: what collectors, virtmon's own metrics, alerts and control hand the renderer.

It lives with the exposition because it is the renderer's input type: naming it needs nothing
from the collectors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["FamilySpec", "LabelValues", "MetricFamily", "MetricType", "Sample", "by_name"]

MetricType = Literal["gauge", "counter", "info", "untyped"]
LabelValues = tuple[str, ...]
Sample = tuple[LabelValues, float]

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def _check(name: str, kind: MetricType, label_names: tuple[str, ...]) -> None:
    """Raise ValueError unless a family of this name, type and labels may be exposed."""
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid metric name {name!r}")
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"counter {name!r} must end in _total")
    if kind == "info" and not name.endswith("_info"):
        raise ValueError(f"info metric {name!r} must end in _info")
    for label in label_names:
        if not _LABEL_RE.match(label) or label.startswith("__"):
            raise ValueError(f"invalid label name {label!r} in {name}")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"duplicate label names in {name}: {label_names}")


@dataclass(slots=True)
class MetricFamily:
    """One metric family: a name, a type, HELP, label names and samples of label values.

    Label names are fixed per family and samples carry only the values, in the same order, so
    the renderer can cache one rendered label string per distinct value tuple. `name` is the
    sample name as exposed: a counter's ends in `_total` and an info metric's in `_info`; the
    OpenMetrics renderer strips those suffixes for the family name itself.
    """

    name: str
    type: MetricType
    help: str
    label_names: tuple[str, ...] = ()
    samples: list[Sample] = field(default_factory=list)
    # When the values were read from their source, where that is not every cycle (the admin
    # series, read every collect.admin_interval and carried between): a threshold rule counts
    # one reading once. None: read by this cycle.
    read_at: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check(self.name, self.type, self.label_names)

    @classmethod
    def checked_before(cls, name: str, kind: MetricType, help_text: str,
                       label_names: tuple[str, ...]) -> MetricFamily:
        """An empty family whose name, type and labels were checked before (a `FamilySpec`'s),
        made without checking them again: a cycle makes a hundred families or more, and the
        checks were most of the cost of making one (1.4 against 0.3 µs)."""
        family = object.__new__(cls)
        family.name, family.type, family.help = name, kind, help_text
        family.label_names, family.samples, family.read_at = label_names, [], None
        return family

    def add(self, label_values: LabelValues, value: float) -> None:
        """Append one sample; `label_values` follows `label_names`."""
        self.samples.append((label_values, value))


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """A family as its source declares it: what `new` makes and what docs/metrics.md lists.

    ``unit`` and ``source`` are for the reference (Markdown): the unit of the values, and the
    libvirt key or call (or virtmon's own counter) they come from. ``labels_note`` follows the
    label names in the reference, for labels made at run time; ``type_note`` replaces the type
    there. A ``name`` ending in ``*`` declares families named at run time (only the reference
    reads it).
    """

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    source: str = ""
    labels_note: str = ""
    type_note: str = ""

    def __post_init__(self) -> None:
        if not self.name.endswith("*"):  # checked once, here: its families are not checked again
            _check(self.name, self.type, self.labels)

    def new(self, *more_labels: str) -> MetricFamily:
        """An empty family of this name, type, HELP and labels (``more_labels`` after them: the
        labels made at run time, which are checked)."""
        if more_labels:
            return MetricFamily(self.name, self.type, self.help, (*self.labels, *more_labels))
        return MetricFamily.checked_before(self.name, self.type, self.help, self.labels)


def by_name(specs: Iterable[FamilySpec]) -> dict[str, FamilySpec]:
    """Specs by family name (for the code that makes the families)."""
    return {spec.name: spec for spec in specs}
