"""Domain state from the `state` group.

Sample::

    # HELP libvirt_domain_info_state Domain state as a virDomainState code ...
    # TYPE libvirt_domain_info_state gauge
    libvirt_domain_info_state{domain="web-01"} 1
    # TYPE libvirt_domain_state gauge
    libvirt_domain_state{domain="web-01",state="running"} 1
    libvirt_domain_state{domain="web-01",state="paused"} 0
    # TYPE libvirt_domain_state_reason gauge
    libvirt_domain_state_reason{domain="web-01"} 1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, LabelValues, MetricFamily, Sample, by_name
from virtmon.virt.states import ACTIVE_STATES, STATE_NAMES


def is_inactive(stats: Mapping[str, Any]) -> bool:
    """Whether a record says its domain has no hypervisor process (shut off, crashed, none).
    A record without the state group is not known to be inactive."""
    state = stats.get("state.state")
    return state is not None and state not in ACTIVE_STATES


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_info_state", "gauge",
        help_text("Domain state as a virDomainState code ("
                  + ", ".join(f"{code} {name}" for code, name in enumerate(STATE_NAMES)) + ")",
                  "state.state"),
        labels=("domain",), unit="virDomainState code",
        source="`state.state`"),
    FamilySpec(
        "libvirt_domain_state", "gauge",
        help_text("1 for the domain's current state, 0 for the others", "state.state"),
        labels=("domain", "state"), unit="1 or 0 (one-hot)",
        source="`state.state`"),
    FamilySpec(
        "libvirt_domain_state_reason", "gauge",
        help_text("Reason for the current state, a virDomain<State>Reason code", "state.reason"),
        labels=("domain",), unit="virDomain*Reason code",
        source="`state.reason`"),
)
_FAMILY = by_name(FAMILIES)

# The one-hot values of libvirt_domain_state in STATE_NAMES order, by state code; a code the
# table does not name is none of the states.
_ONE_HOT = {code: tuple(int(index == code) for index in range(len(STATE_NAMES)))
            for code in range(len(STATE_NAMES))}
_NONE_OF_THEM = (0,) * len(STATE_NAMES)


class _DomainSamples(NamedTuple):
    """A domain's samples in the three families, for one state and reason."""

    state: int
    reason: int | None
    code: Sample
    onehot: tuple[Sample, ...]
    why: Sample | None

    @classmethod
    def of(cls, domain: str, state: int, reason: int | None,
           last: _DomainSamples | None) -> _DomainSamples:
        """The samples of ``domain`` in ``state`` for ``reason``, with the label tuples of
        ``last``, its samples in the last cycle, if any."""
        onehot_labels: tuple[LabelValues, ...]
        if last is None:
            labels: LabelValues = (domain,)
            onehot_labels = tuple((domain, name) for name in STATE_NAMES)
        else:
            labels = last.code[0]
            onehot_labels = tuple(sample[0] for sample in last.onehot)
        onehot = tuple(zip(onehot_labels, _ONE_HOT.get(state, _NONE_OF_THEM), strict=True))
        return cls(state, reason, (labels, state), onehot,
                   None if reason is None else (labels, reason))


class StateCollector:
    """`libvirt_domain_info_state`, one-hot `libvirt_domain_state` and the state reason.

    The one-hot family is most of the samples of a host whose domains have few devices, and
    allocating its samples was most of the collector's work (and of the garbage collector's):
    a domain whose state and reason are those of the last cycle gives that cycle's samples
    again, and only a new domain's, or a changed one's, are built. What it carries are the
    samples of the domains of the last cycle alone, so the families are the same as a fresh
    collector's.
    """

    name = "state"
    stats_groups: ClassVar[tuple[str, ...]] = ("state",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def __init__(self) -> None:
        # domain name -> its samples, for the domains of the last cycle.
        self._samples: dict[str, _DomainSamples] = {}

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Three families from `state.state` and `state.reason`."""
        code = _FAMILY["libvirt_domain_info_state"].new()
        onehot = _FAMILY["libvirt_domain_state"].new()
        reason = _FAMILY["libvirt_domain_state_reason"].new()
        codes, onehots, reasons = code.samples, onehot.samples, reason.samples
        last = self._samples.get
        samples_now: dict[str, _DomainSamples] = {}
        for record in snapshot.domains:
            stats = record.stats
            state = stats.get("state.state")
            if state is None:
                continue
            why = stats.get("state.reason")
            domain = record.name
            samples = last(domain)
            if samples is None or samples.state != state or samples.reason != why:
                samples = _DomainSamples.of(domain, state, why, samples)
            samples_now[domain] = samples
            codes.append(samples.code)
            onehots += samples.onehot
            if samples.why is not None:
                reasons.append(samples.why)
        self._samples = samples_now
        return [code, onehot, reason]
