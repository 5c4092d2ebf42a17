"""The one table of domain state names agrees with the installed libvirt."""

from __future__ import annotations

import libvirt

from virtmon.virt.states import ACTIVE_STATES, SHUTOFF, STATE_NAMES


def test_state_names_are_libvirts_by_code() -> None:
    """Each name is the virDomainState constant of that code, and every state is named."""
    assert [getattr(libvirt, f"VIR_DOMAIN_{name.upper()}") for name in STATE_NAMES] == list(
        range(len(STATE_NAMES)))
    assert SHUTOFF == libvirt.VIR_DOMAIN_SHUTOFF and SHUTOFF not in ACTIVE_STATES
    assert {STATE_NAMES[code] for code in ACTIVE_STATES} == {
        "running", "blocked", "paused", "shutdown", "pmsuspended"}
