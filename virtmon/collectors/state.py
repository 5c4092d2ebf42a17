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
from typing import Any, ClassVar

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name
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

# A domain's label tuples: ``(domain,)`` and one ``(domain, state)`` per state name.
_DomainLabels = tuple[tuple[str], tuple[tuple[str, str], ...]]


class StateCollector:
    """`libvirt_domain_info_state`, one-hot `libvirt_domain_state` and the state reason.

    The one-hot family is most of the samples of a host whose domains have few devices, and
    allocating its label tuples was most of the collector's work (and of the garbage
    collector's): each cycle takes a domain's label tuples from the last cycle's and builds
    only a new domain's. What it carries are the labels of the domains of the last cycle alone,
    so the families are the same as a fresh collector's.
    """

    name = "state"
    stats_groups: ClassVar[tuple[str, ...]] = ("state",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def __init__(self) -> None:
        # domain name -> its label tuples, for the domains of the last cycle.
        self._labels: dict[str, _DomainLabels] = {}

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Three families from `state.state` and `state.reason`."""
        code = _FAMILY["libvirt_domain_info_state"].new()
        onehot = _FAMILY["libvirt_domain_state"].new()
        reason = _FAMILY["libvirt_domain_state_reason"].new()
        codes, onehots, reasons = code.samples, onehot.samples, reason.samples
        last = self._labels.get
        labels_now: dict[str, _DomainLabels] = {}
        for record in snapshot.domains:
            stats = record.stats
            state = stats.get("state.state")
            if state is None:
                continue
            domain = record.name
            labels = last(domain)
            if labels is None:
                labels = ((domain,), tuple((domain, name) for name in STATE_NAMES))
            labels_now[domain] = labels
            codes.append((labels[0], state))
            onehots += zip(labels[1], _ONE_HOT.get(state, _NONE_OF_THEM), strict=True)
            why = stats.get("state.reason")
            if why is not None:
                reasons.append((labels[0], why))
        self._labels = labels_now
        return [code, onehot, reason]
