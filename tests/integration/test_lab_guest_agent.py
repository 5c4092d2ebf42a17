"""The guest-agent poller on the lab's real guest, through a real virtmon.

Each test boots its own guest (tests/lab/guest.py) under a daemon with the poller on, and
compares what ``/metrics`` says with what the guest itself says (``df``, ``ip``, ``uname``,
run through the agent's ``guest-exec``), before and after a change made inside the guest.
The hang test stops qemu-ga with SIGSTOP: only that domain goes down, within its deadline,
while the collection cycle and another guest's polls go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import call, daemon_config, running_daemon
from tests.integration.test_lab_event_catalog import of, unique_domain
from tests.integration.test_lab_guest import BOOT_TIMEOUT, sample
from tests.lab import guest
from tests.lab import lab as lab_module
from tests.streamclient import StreamFollower, follow
from tests.tools import need
from tests.waiting import exposition_until, wait_until
from virtmon.app import Daemon

pytestmark = pytest.mark.lab

# The lab's domains whose agent channel never connects (no OS, or no channel at all).
NO_AGENT_DOMAINS = ("lab-0", "lab-1")
POLL_INTERVAL = 1.0
COLLECT_INTERVAL = 1.0
# Below libvirt's own wait for a stopped agent (5 s for guest-sync): a hung poll is abandoned.
POLL_TIMEOUT = 3.0
WAIT = 60.0
FILL_MIB = 4


@contextlib.asynccontextmanager
async def polling(short_tmp: Path, domain: str) -> AsyncIterator[tuple[Daemon, StreamFollower]]:
    """A daemon on the lab with the guest-agent poller on, and its stream for one domain."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI}, collect={
        "interval": COLLECT_INTERVAL, "guest_agent": True, "guest_agent_interval": POLL_INTERVAL,
        "guest_agent_timeout": POLL_TIMEOUT})
    async with running_daemon(cfg) as daemon, \
            follow(daemon.control_socket, f"domain={domain}") as stream:
        yield daemon, stream


async def booted(lab_conn: Any, stream: StreamFollower, domain: str) -> Any:
    """A guest, once its agent has connected."""
    dom = await call(lambda: guest.create(lab_conn, domain, mark=lab_module.LAB_MARK))
    await stream.wait_for(of("agent_lifecycle", "connected"), BOOT_TIMEOUT)
    return dom


async def in_guest(dom: Any, script: str) -> str:
    """A script's output in the guest; it must succeed."""
    code, output = await call(guest.guest_exec, dom, script)
    assert code == 0, output
    return str(output)


async def df_used(dom: Any) -> int:
    """Bytes used on the data disk, as ``df`` in the guest says."""
    lines = (await in_guest(dom, f"df -B1 {guest.DATA_MOUNT}")).splitlines()
    return int(lines[-1].split()[2])


def series(text: str, metric: str, domain: str) -> list[dict[str, str]]:
    """The label sets of one domain's samples of a family."""
    found = []
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if labels.get("domain") == domain:
                found.append(labels)
    return found


def unlabelled(text: str, metric: str) -> float:
    """The value of a family's one series without labels."""
    [value] = [line.split()[1] for line in text.splitlines() if line.startswith(metric + " ")]
    return float(value)


async def polled_after(daemon: Daemon, domain: str, moment: float) -> str:
    """The first exposition with a poll of ``domain`` answered after ``moment`` (Unix time)."""
    return await exposition_until(daemon.scheduler, lambda text: sample(
        text, "libvirt_domain_guest_agent_last_success_timestamp_seconds",
        domain=domain) > moment, WAIT)


async def channel_disconnected(dom: Any) -> None:
    """Wait (bounded) until libvirt's live XML shows the agent's channel disconnected."""
    deadline = time.monotonic() + WAIT
    while "name='org.qemu.guest_agent.0' state='disconnected'" not in await call(dom.XMLDesc, 0):
        assert time.monotonic() < deadline, "the agent channel stayed connected"
        await asyncio.sleep(0.2)


async def guest_addresses(dom: Any) -> set[tuple[str, str, str, str]]:
    """(interface, family, address, prefix) of every address ``ip`` lists in the guest."""
    found = set()
    for line in (await in_guest(dom, "ip -o addr")).splitlines():
        fields = line.split()
        family = {"inet": "ipv4", "inet6": "ipv6"}[fields[2]]
        address, prefix = fields[3].split("/")
        found.add((fields[1], family, address, prefix))
    return found


def exported_addresses(text: str, domain: str) -> set[tuple[str, str, str, str]]:
    """The same, from the exposition."""
    return {(s["interface"], s["family"], s["address"], s["prefix"])
            for s in series(text, "libvirt_domain_guest_interface_address_info", domain)}


async def test_file_systems_addresses_and_os_follow_the_guest(
    lab_conn: Any, lab: str, short_tmp: Path
) -> None:
    """Used bytes of /data lie between two df readings in the guest and move by what a file
    written there takes; the addresses are what ip lists, an added one appears; the OS info
    carries the guest's OS release, kernel and hostname; the lab's agentless domains are never
    polled; /v1/status counts the poller's rounds and the agents up; promtool finds nothing to
    say about the exposition."""
    async with unique_domain(lab, "t-ga") as name, polling(short_tmp, name) as (daemon, stream):
        dom = await booted(lab_conn, stream, name)
        for _ in range(2):  # before and after a file is written
            before = await df_used(dom)
            text = await polled_after(daemon, name, time.time())
            after = await df_used(dom)
            [fs] = series(text, "libvirt_domain_guest_filesystem_used_bytes", name)
            assert (fs["mountpoint"], fs["fstype"]) == (guest.DATA_MOUNT, "ext4")
            used = sample(text, "libvirt_domain_guest_filesystem_used_bytes", domain=name)
            assert min(before, after) <= used <= max(before, after), (before, used, after)
            assert sample(text, "libvirt_domain_guest_filesystem_size_bytes", domain=name) > used
            if used > FILL_MIB << 20:
                break
            await in_guest(dom, f"dd if=/dev/zero of={guest.DATA_MOUNT}/fill bs=1M "
                                f"count={FILL_MIB} 2>/dev/null && sync")
        assert used >= FILL_MIB << 20

        await in_guest(dom, f"ip addr add 10.0.3.7/24 dev {guest.NIC}")
        before = await guest_addresses(dom)
        text = await polled_after(daemon, name, time.time())
        after = await guest_addresses(dom)
        # The guest may gain an address between the reads (IPv6 autoconfiguration after boot).
        assert before & after <= exported_addresses(text, name) <= before | after
        assert (guest.NIC, "ipv4", "10.0.3.7", "24") in exported_addresses(text, name)

        [os_info] = series(text, "libvirt_domain_guest_os_info", name)
        assert os_info["kernel_release"] == (await in_guest(dom, "uname -r")).strip()
        assert os_info["hostname"] == (await in_guest(dom, "hostname")).strip()
        assert os_info["timezone"] == "UTC"
        assert (os_info["os_id"], os_info["os_name"], os_info["os_version_id"]) == \
            ("virtmon-lab", "virtmon lab guest", "1")
        assert abs(sample(text, "libvirt_domain_guest_clock_offset_seconds", domain=name)) < 5

        assert sample(text, "virtmon_guest_agent_probes_total", domain=name, outcome="ok") >= 3
        status = daemon.status()["guest_agent"]
        assert status["enabled"] and status["rounds"] >= 3, status
        assert status["connected_agents"] >= 1 and status["up"] >= 1, status
        linted = await call(lambda: subprocess.run([need("promtool"), "check", "metrics"],
                                                   input=text.encode(), capture_output=True,
                                                   timeout=60, check=False))
        assert (linted.returncode, linted.stdout, linted.stderr) == (0, b"", b"")
        for other in NO_AGENT_DOMAINS:
            assert not series(text, "virtmon_guest_agent_probes_total", other), other
            assert not series(text, "libvirt_domain_guest_agent_up", other), other


async def test_a_stopped_agent_takes_down_only_its_domain(
    lab_conn: Any, lab: str, short_tmp: Path
) -> None:
    """qemu-ga SIGSTOPped in one guest: that domain goes down within its deadline and its
    abandoned poll is counted, while another guest stays up and the collection cycle keeps
    publishing fresh cycles; after SIGCONT the domain comes back up."""
    async with unique_domain(lab, "t-ga-hung") as hung, unique_domain(lab, "t-ga-ok") as fine, \
            polling(short_tmp, hung) as (daemon, stream):
        async with follow(daemon.control_socket, f"domain={fine}") as fine_stream:
            await booted(lab_conn, fine_stream, fine)
        dom = await booted(lab_conn, stream, hung)
        await exposition_until(daemon.scheduler, lambda text: sample(
            text, "libvirt_domain_guest_agent_up", domain=hung) == 1 and sample(
            text, "libvirt_domain_guest_agent_up", domain=fine) == 1, WAIT)
        stats = daemon.scheduler.stats
        cycles, hang_started = stats.cycles, time.monotonic()
        await call(guest.spawn, dom, "kill -STOP $(cat /run/qemu-ga.pid); sleep 30; "
                                     "kill -CONT $(cat /run/qemu-ga.pid)")
        text = await exposition_until(daemon.scheduler, lambda text: sample(
            text, "libvirt_domain_guest_agent_up", domain=hung) == 0, WAIT)
        stopped_at = time.time()
        assert unlabelled(text, "virtmon_guest_agent_calls_abandoned_total") >= 1
        assert sample(text, "virtmon_guest_agent_probes_total", domain=hung,
                      outcome="timeout") >= 1
        # Rounds later, the agent still stopped, the other guest is still polled and answers
        # (polls piling up on the hung domain would have used up the abandoned-call bound).
        poller = daemon.guest_agent
        assert poller is not None
        rounds = poller.rounds
        await wait_until(lambda: poller.rounds >= rounds + 4, WAIT, 0.2)
        later = time.time()
        text = await exposition_until(daemon.scheduler, lambda text: sample(
            text, "libvirt_domain_guest_agent_last_success_timestamp_seconds",
            domain=fine) > later, WAIT)
        assert sample(text, "libvirt_domain_guest_agent_up", domain=hung) == 0
        assert sample(text, "libvirt_domain_guest_agent_up", domain=fine) == 1
        assert sample(text, "virtmon_guest_agent_probes_total", domain=hung,
                      outcome="skipped") >= 1
        # Continued: the agent answers again, and the abandoned call has returned.
        await polled_after(daemon, hung, stopped_at)
        await wait_until(lambda: poller.caller.abandoned_outstanding == 0, WAIT, 0.5)
        # The collection cycle kept its tick all along (a cycle is counted, fresh or not, on
        # each tick; half of them is far from what a cycle held up by the agent would make).
        ticks = (time.monotonic() - hang_started) / COLLECT_INTERVAL
        assert stats.cycles - cycles >= ticks / 2, (stats.cycles - cycles, ticks)


async def test_an_agent_that_is_not_connected_is_never_asked(
    lab_conn: Any, lab: str, short_tmp: Path
) -> None:
    """A guest whose qemu-ga is stopped when virtmon starts (its channel disconnected in the
    live XML) is not polled in any round; once the agent connects (the event) it is."""
    async with unique_domain(lab, "t-ga-off") as name:
        dom = await call(lambda: guest.create(lab_conn, name, mark=lab_module.LAB_MARK))
        await call(guest.wait_agent, dom, BOOT_TIMEOUT)
        await call(guest.spawn, dom, "agent-ctl restart 30")
        await channel_disconnected(dom)
        async with polling(short_tmp, name) as (daemon, stream):
            poller = daemon.guest_agent
            assert poller is not None
            rounds = poller.rounds
            await wait_until(lambda: poller.rounds >= rounds + 3, WAIT, 0.2)
            text = await exposition_until(daemon.scheduler, lambda _text: True)
            assert not series(text, "virtmon_guest_agent_probes_total", name)
            assert not series(text, "libvirt_domain_guest_agent_up", name)
            await stream.wait_for(of("agent_lifecycle", "connected"), WAIT)
            await exposition_until(daemon.scheduler, lambda text: sample(
                text, "libvirt_domain_guest_agent_up", domain=name) == 1, WAIT)
