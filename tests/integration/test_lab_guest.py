"""Events a running Linux guest causes, from the lab's real libvirtd through a real virtmon.

Each test boots its own guest (tests/lab/guest.py: Debian's kernel, busybox, qemu-ga), under a
daemon following the stream filtered to that domain, makes the guest do one thing (through the
agent's ``guest-exec``, or a host-side call the guest answers), and checks the event end to end:
decoded in the ``/v1/events`` stream, stored in the journal under the same sequence number,
counted in ``virtmon_events_received_total`` (and in the per-domain counter where there is one),
and raising the default alert rule that matches it, if any.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import call, daemon_config, running_daemon
from tests.integration.test_lab_event_catalog import of, open_within
from tests.lab import guest
from tests.lab import lab as lab_module
from tests.streamclient import Event, StreamFollower, follow, get_json
from tests.waiting import exposition_until, wait_until
from virtmon.app import Daemon

pytestmark = pytest.mark.lab

# A guest boots in seconds, but under TCG on a loaded 2-core machine it may take many more.
BOOT_TIMEOUT = 120.0
EVENT_TIMEOUT = 60.0


@pytest.fixture
async def name(lab: str) -> AsyncIterator[str]:
    """A unique guest domain name for one test; the domain is always removed after."""
    domain = f"t-guest-{uuid.uuid4().hex[:8]}"
    try:
        yield domain
    finally:
        conn = await call(open_within, lab, 30.0)
        try:
            await call(lab_module.remove_domain, conn, domain)
        finally:
            await call(conn.close)


@contextlib.asynccontextmanager
async def watching(short_tmp: Path, domain: str) -> AsyncIterator[tuple[Daemon, StreamFollower]]:
    """A daemon on the lab (default alert rules on) and its stream, filtered to one domain."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            follow(daemon.control_socket, f"domain={domain}") as stream:
        yield daemon, stream


async def booted(lab_conn: Any, stream: StreamFollower, domain: str, **options: Any) -> Any:
    """Define and start a guest; return it once its agent has connected (seen in the stream)."""
    dom = await call(lambda: guest.create(lab_conn, domain, mark=lab_module.LAB_MARK,
                                          **options))
    await stream.wait_for(of("agent_lifecycle", "connected"), BOOT_TIMEOUT)
    return dom


def sample(text: str, metric: str, **labels: str) -> float:
    """The value of one sample of an exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def assert_end_to_end(daemon: Daemon, event: Event, rule: str | None = None,
                            counter: tuple[str, dict[str, str]] | None = None) -> None:
    """A streamed event is in the journal and in /v1/events under its sequence number, counted
    by kind (and in ``counter``, a per-domain metric with its labels), and raised ``rule``."""
    seq = event["seq"]
    journaled = await call(daemon.journal.read_since, seq - 1, 1)
    assert journaled and journaled[0].to_dict() == event
    replay = await get_json(daemon.control_socket,
                            f"/v1/events?since={seq - 1}&domain={event['domain']}")
    assert replay[0] == event
    await exposition_until(daemon.scheduler, lambda text: sample(
        text, "virtmon_events_received_total", kind=event["kind"]) >= 1, EVENT_TIMEOUT)
    if counter is not None:
        metric, labels = counter
        await exposition_until(daemon.scheduler, lambda text: sample(
            text, metric, domain=event["domain"], **labels) >= 1, EVENT_TIMEOUT)
    if rule is not None:
        await wait_until(lambda: bool(daemon.alerts.store.alerts(
            rule=rule, domain=event["domain"])), EVENT_TIMEOUT, 0.2)


def flag(kind: str, name: str, detail: str) -> Callable[[Event], bool]:
    """A matcher on kind, name and detail."""
    return lambda e: (e["kind"], e["name"], e["detail"]) == (kind, name, detail)


async def test_the_guest_boots_with_its_modules_and_its_agent_connects(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """A guest boots from the lab's image: every wanted module is loaded and the agent's
    connection reaches the journal, the stream and the counters."""
    async with watching(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        connected = await stream.wait_for(of("agent_lifecycle", "connected"))
        assert connected["payload"]["state"] == "connected"
        code, modules = await call(guest.guest_exec, dom, "cut -d' ' -f1 /proc/modules")
        assert code == 0
        assert set(guest.MODULES) <= set(modules.split())
        await assert_end_to_end(daemon, connected)
