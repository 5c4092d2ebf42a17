"""Every default event rule fires on an event the real decoder made from a recorded payload.

The payloads are libvirt-python's callback arguments recorded on the lab (or, where the lab
cannot produce the event, written from libvirt's constants: tests/events/payloads). Each goes
through the connection supervisor's own callback (``_on_event``: decode, name the domain,
publish) into a real bus and journal; the journaled events are what the rules see.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import libvirt
import pytest

from tests.events.test_decode import RECORDINGS, _event_id
from virtmon.alerts.ruleconfig import load_rules
from virtmon.alerts.rules import EventRule
from virtmon.events.bus import EventBus
from virtmon.events.journal import Journal
from virtmon.events.model import Event
from virtmon.virt.calls import LibvirtCaller
from virtmon.virt.connection import ConnectionSupervisor
from virtmon.virt.handle import ConnectionSettings
from virtmon.virt.inventory import Inventory

URI = "qemu:///system"
# A post-copy migration failure needs a second host: its arguments are written from libvirt's
# constants (VIR_DOMAIN_EVENT_SUSPENDED, VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED).
POSTCOPY_FAILED = {"id": "LIFECYCLE", "case": "postcopy_failed",
                   "args": [libvirt.VIR_DOMAIN_EVENT_SUSPENDED,
                            libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED]}
# rule -> (recorded cases that fire it, cases that resolve it); "connection:NAME" is one of
# virtmon's own connection events, published by the supervisor itself.
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "DomainCrashed": ({"LIFECYCLE-qemu_killed"}, {"LIFECYCLE-start", "LIFECYCLE-restore"}),
    "DomainPausedOnIOError": ({"IO_ERROR-nbd_backing_gone", "IO_ERROR_REASON-nbd_backing_gone"},
                              {"LIFECYCLE-destroy", "LIFECYCLE-qemu_killed"}),
    "DomainIOError": ({"IO_ERROR_REASON-enospc_report"}, set()),
    "DomainWatchdogFired": ({"WATCHDOG-reset", "WATCHDOG-inject_nmi"}, set()),
    "DomainBlockThresholdCrossed": ({"BLOCK_THRESHOLD-write_past_threshold"}, set()),
    "DomainMemoryFailure": ({"MEMORY_FAILURE-guest_inject", "MEMORY_FAILURE-hypervisor_ignore"},
                            set()),
    "DomainControlError": ({"CONTROL_ERROR-monitor_broken"},
                           {"LIFECYCLE-start", "LIFECYCLE-restore"}),
    "GuestAgentDisconnected": ({"AGENT_LIFECYCLE-domain_started"},
                               {"AGENT_LIFECYCLE-channel_connected", "LIFECYCLE-destroy",
                                "LIFECYCLE-qemu_killed"}),
    "DomainBlockJobFailed": ({"BLOCK_JOB_2-copy_failed"}, set()),
    "DomainMigrationFailed": ({"LIFECYCLE-postcopy_failed"},
                              {"LIFECYCLE-start", "LIFECYCLE-restore", "LIFECYCLE-destroy",
                               "LIFECYCLE-qemu_killed"}),
    "LibvirtConnectionLost": ({"connection:lost"}, {"connection:restored"}),
}


class Domain:
    """What the callback reads of libvirt's domain object: held locally, no call to libvirtd."""

    def name(self) -> str:
        """The domain's name."""
        return "web"

    def UUIDString(self) -> str:
        """The domain's UUID."""
        return "11111111-1111-1111-1111-111111111111"

    def ID(self) -> int:
        """The domain's id."""
        return 7


async def journaled(tmp_path: Any) -> dict[str, Event]:
    """Every recorded case (and the supervisor's connection events) through the real callback
    into a real bus and journal: the journaled event of each, by case."""
    journal = Journal(tmp_path / "virtmon.db")
    bus = EventBus(journal)
    supervisor = ConnectionSupervisor(ConnectionSettings(URI), LibvirtCaller(), bus, Inventory())
    supervisor._loop = asyncio.get_running_loop()  # what run() records; no connection here
    cases: list[str] = []
    for rec in [*RECORDINGS, POSTCOPY_FAILED]:
        event_id = _event_id(rec["id"])
        if event_id is None:  # an id this libvirt-python does not know: never delivered
            continue
        supervisor._on_event(None, Domain(), *rec["args"], event_id)
        cases.append(f"{rec['id']}-{rec['case']}")
    await asyncio.sleep(0)  # the callbacks queued their events on the loop: let them run
    for name in ("lost", "restored"):
        supervisor._publish_connection(name, "eof" if name == "lost" else None)
        cases.append(f"connection:{name}")
    bus.close()
    with anyio.fail_after(10):
        await bus.run()
    events = list(journal.iter_all())
    journal.close()
    assert len(events) == len(cases), "every case journaled once"
    return dict(zip(cases, events, strict=True))


async def test_every_default_event_rule_fires_and_resolves_on_decoded_events(
        tmp_path: Any) -> None:
    """Each default event rule fires on exactly the decoded cases expected of it and resolves on
    the expected ones; a default rule missing from the table fails (it needs its case)."""
    events = await journaled(tmp_path)
    rules = {r.name: r for r in load_rules({}, []) if isinstance(r, EventRule)}
    assert set(rules) == set(EXPECTED), "a default event rule without recorded cases"
    for name, rule in rules.items():
        fires = {case for case, event in events.items() if rule.fires_on(event)}
        resolves = {case for case, event in events.items() if rule.resolves_on(event)}
        assert (fires, resolves) == EXPECTED[name], name


@pytest.mark.parametrize("case", ["LIFECYCLE-qemu_killed", "WATCHDOG-reset"])
async def test_a_decoded_event_carries_what_the_rules_template(tmp_path: Any, case: str) -> None:
    """The decoded events name the domain the callback's object holds (rules' {domain})."""
    event = (await journaled(tmp_path))[case]
    assert (event.domain, event.uuid, event.uri) == (
        "web", "11111111-1111-1111-1111-111111111111", URI)
