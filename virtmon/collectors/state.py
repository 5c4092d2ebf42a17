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
from typing import Any

from virtmon.collectors.base import MetricFamily, help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.virt.states import ACTIVE_STATES, STATE_NAMES


def is_inactive(stats: Mapping[str, Any]) -> bool:
    """Whether a record says its domain has no hypervisor process (shut off, crashed, none).
    A record without the state group is not known to be inactive."""
    state = stats.get("state.state")
    return state is not None and state not in ACTIVE_STATES


class StateCollector:
    """`libvirt_domain_info_state`, one-hot `libvirt_domain_state` and the state reason."""

    name = "state"

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Three families from `state.state` and `state.reason`."""
        code = MetricFamily(
            "libvirt_domain_info_state",
            "gauge",
            help_text(
                "Domain state as a virDomainState code ("
                + ", ".join(f"{code} {name}" for code, name in enumerate(STATE_NAMES)) + ")",
                "state.state",
            ),
            ("domain",),
        )
        onehot = MetricFamily(
            "libvirt_domain_state",
            "gauge",
            help_text("1 for the domain's current state, 0 for the others", "state.state"),
            ("domain", "state"),
        )
        reason = MetricFamily(
            "libvirt_domain_state_reason",
            "gauge",
            help_text(
                "Reason for the current state, a virDomain<State>Reason code", "state.reason"
            ),
            ("domain",),
        )
        for record in snapshot.domains:
            stats = record.stats
            state = stats.get("state.state")
            if state is None:
                continue
            domain = record.name
            code.add((domain,), state)
            for index, state_name in enumerate(STATE_NAMES):
                onehot.add((domain, state_name), 1 if index == state else 0)
            why = stats.get("state.reason")
            if why is not None:
                reason.add((domain,), why)
        return [code, onehot, reason]
