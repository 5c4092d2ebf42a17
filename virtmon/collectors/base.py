"""The collector protocol and the adapter that runs collectors.

Collector policy: a collector reads the `StatsSnapshot` it is given and returns metric families,
each made from one of its declarations (`families`, which docs/metrics.md is written from).
It makes no libvirt call and no other I/O, keeps no state between cycles that could change what
it returns (so a vanished domain or device is simply absent from the next cycle; it may reuse
the last cycle's label tuples of the series it makes again, to save allocating them) and never
sees a registry. `run_collectors`
times each one, turns its outcome into `virtmon_collector_success` and
`virtmon_collector_duration_seconds`, and keeps one failure from affecting the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, ClassVar, Protocol

import structlog

from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily

__all__ = [
    "Collector",
    "CollectorOutcome",
    "KeyedFamilies",
    "NoData",
    "claim_unique",
    "help_text",
    "ns_to_seconds",
    "run_collectors",
]

_log = structlog.get_logger(component="collectors")


def claim_unique(used: set[str], name: str) -> str:
    """``name``, or ``name_1``, ``name_2``... if taken; the result is added to ``used``.

    Device labels must never repeat within a domain: a duplicate series fails the whole scrape.
    """
    candidate, suffix = name, 1
    while candidate in used:
        candidate = f"{name}_{suffix}"
        suffix += 1
    used.add(candidate)
    return candidate


# Host facts (node info, CPU map, host interfaces) change almost never and cost several calls:
# they are read on a connection's first cycle and then every this many cycles (the scheduler).
FACTS_EVERY = 8


def help_text(what: str, source: str, fact: bool = False, age: str | None = None) -> str:
    """HELP text naming the libvirt source and the age of the value, as METRICS.md requires;
    ``fact``: a host fact, read only every :data:`FACTS_EVERY` cycles; ``age``: how often a
    value read on a schedule of its own is read."""
    if age is None:
        age = (f"read every {FACTS_EVERY} collection cycles" if fact
               else "value from the last collection cycle")
    return f"{what} (libvirt {source}; {age})."


def ns_to_seconds(ns: int) -> float:
    """Nanoseconds, as libvirt gives times, in seconds."""
    return ns / 1e9


class KeyedFamilies:
    """One cycle's families that take one sample each from a libvirt key of a record.

    ``specs``: (key, family, conversion) in family order; a key may feed several families,
    and a conversion of None keeps the value as libvirt gave it (an int stays an int). A
    record's keys are found by one set intersection, in C: a record without the group (a
    shut-off domain's, or a driver's that does not fill it) costs that alone, not one lookup
    per key. ``zero_is_never``: keys whose 0 means the value was never reported (no sample).
    """

    def __init__(self, specs: Iterable[tuple[str, FamilySpec, Callable[[Any], float] | None]],
                 zero_is_never: frozenset[str] = frozenset()) -> None:
        self.families: list[MetricFamily] = []
        self._feeds: dict[str, list[tuple[MetricFamily, Callable[[Any], float] | None]]] = {}
        for key, spec, conversion in specs:
            family = spec.new()
            self.families.append(family)
            self._feeds.setdefault(key, []).append((family, conversion))
        self._keys = frozenset(self._feeds)
        self._zero_is_never = zero_is_never

    def add(self, stats: Mapping[str, Any], labels: tuple[str, ...]) -> None:
        """A sample of ``labels`` in each family fed by a key ``stats`` has."""
        for key in stats.keys() & self._keys:
            value = stats[key]
            if value == 0 and key in self._zero_is_never:
                continue
            for family, conversion in self._feeds[key]:
                family.samples.append((labels, value if conversion is None
                                       else conversion(value)))


# The families run_collectors adds: how each collector fared.
OUTCOME_FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "virtmon_collector_success", "gauge",
        "Whether the collector succeeded in the last collection cycle (1) or not (0).",
        ("collector",), unit="1 or 0", source="each enabled collector in the last cycle"),
    FamilySpec(
        "virtmon_collector_duration_seconds", "gauge",
        "Time the collector took in the last collection cycle, in seconds.",
        ("collector",), unit="seconds", source="each enabled collector in the last cycle"),
)


class Collector(Protocol):
    """A pure function of the snapshot to metric families; `name` is its `collector` label,
    `stats_groups` the libvirt stats groups it reads (`STATS_GROUP_FLAGS` names; none for a
    collector of node calls, the admin helper or events), `families` every family it makes
    (docs/metrics.md is written from them)."""

    stats_groups: ClassVar[tuple[str, ...]]
    families: ClassVar[tuple[FamilySpec, ...]]

    @property
    def name(self) -> str:
        """The collector's name: file name, table key, flag and label value."""
        ...

    def collect(self, snapshot: StatsSnapshot) -> Iterable[MetricFamily]:
        """Return this cycle's families built fresh from `snapshot`; raise `NoData` if absent."""
        ...


class NoData(Exception):
    """The collector's input does not exist in this snapshot (not an error: logged at debug)."""


@dataclass(frozen=True, slots=True)
class CollectorOutcome:
    """How one collector fared in one cycle."""

    name: str
    success: bool
    duration_seconds: float
    no_data: bool = False
    error: str | None = None


def _label_widths(family: MetricFamily) -> set[int]:
    """How many label values the samples of ``family`` carry (one set; a loop in C, as this
    runs once per sample of every cycle)."""
    return set(map(len, map(itemgetter(0), family.samples)))


def run_collectors(
    collectors: Sequence[Collector],
    snapshot: StatsSnapshot,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[MetricFamily], list[CollectorOutcome]]:
    """Run every collector on `snapshot`; a failure costs only that collector's families.

    Returns the families of the successful collectors followed by
    `virtmon_collector_success{collector}` and `virtmon_collector_duration_seconds{collector}`,
    and one outcome per collector. A collector that raises `NoData` gets success 0 logged at
    debug; any other exception gets success 0 logged at error with the traceback. Families of a
    failing collector are discarded whole, so no half-built group is ever exported.
    """
    families: list[MetricFamily] = []
    outcomes: list[CollectorOutcome] = []
    for collector in collectors:
        name = collector.name
        start = clock()
        try:
            produced = list(collector.collect(snapshot))
            for family in produced:
                if _label_widths(family) - {len(family.label_names)}:
                    raise ValueError(f"{family.name}: a sample's label values do not match "
                                     f"its label names {family.label_names}")
        except NoData as exc:
            duration = clock() - start
            _log.debug("virtmon.collector.no_data", collector=name, reason=str(exc))
            outcomes.append(CollectorOutcome(name, False, duration, no_data=True, error=str(exc)))
        except Exception as exc:
            duration = clock() - start
            _log.error("virtmon.collector.failed", collector=name, error=repr(exc), exc_info=True)
            outcomes.append(CollectorOutcome(name, False, duration, error=repr(exc)))
        else:
            duration = clock() - start
            families.extend(produced)
            outcomes.append(CollectorOutcome(name, True, duration))
    success, durations = (spec.new() for spec in OUTCOME_FAMILIES)
    for outcome in outcomes:
        success.add((outcome.name,), 1 if outcome.success else 0)
        durations.add((outcome.name,), outcome.duration_seconds)
    families.append(success)
    families.append(durations)
    return families, outcomes
