"""The guest-agent families from recorded agent answers, and the agent channel read from XML."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.tools import need
from virtmon.collectors.guest_agent import (
    FAMILIES,
    AgentState,
    GuestReading,
    guest_agent_families,
)
from virtmon.exposition.family import MetricFamily
from virtmon.exposition.render import render_text
from virtmon.virt.guest_agent import agent_connected

# Recorded on the lab's guest (libvirt 9.0, qemu-ga 7.2): virDomainGetGuestInfo with the
# users, OS, time zone, hostname and file-system groups, and virDomainInterfaceAddresses
# with the agent as source.
LAB_INFO: dict[str, Any] = {
    "user.count": 0, "os.machine": "x86_64", "os.kernel-release": "6.1.0-57-amd64",
    "os.kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)",
    "timezone.name": "UTC", "timezone.offset": 0, "hostname": "guest", "fs.count": 1,
    "fs.0.name": "vda", "fs.0.mountpoint": "/data", "fs.0.fstype": "ext4",
    "fs.0.total-bytes": 24116224, "fs.0.used-bytes": 14336, "fs.0.disk.count": 1,
    "fs.0.disk.0.alias": "vda", "fs.0.disk.0.device": "/dev/vda",
}
LAB_ADDRESSES: dict[str, Any] = {
    "lo": {"addrs": [{"addr": "127.0.0.1", "prefix": 8, "type": 0},
                     {"addr": "::1", "prefix": 128, "type": 1}],
           "hwaddr": "00:00:00:00:00:00"},
    "eth0": {"addrs": [{"addr": "10.0.2.15", "prefix": 24, "type": 0}],
             "hwaddr": "52:54:00:cf:7d:da"},
}
# libvirt 11's load group (keys as its header defines them: VIR_DOMAIN_GUEST_INFO_LOAD_1M is
# "load.1m"; the lab's libvirt 9.0 cannot record one) and a full OS group (os-release present);
# a file system the agent gives no sizes for (a pseudo file system), and one listed twice.
RICH_INFO: dict[str, Any] = {
    "load.1m": 0.25, "load.5m": 0.5, "load.15m": 1.75,
    "os.id": "debian", "os.name": "Debian GNU/Linux", "os.version-id": "12",
    "os.kernel-release": "6.1.0-57-amd64", "os.machine": "x86_64",
    "hostname": "web-01", "timezone.name": "CET", "timezone.offset": 3600, "user.count": 2,
    "fs.count": 3,
    "fs.0.name": "dm-0", "fs.0.mountpoint": "/", "fs.0.fstype": "xfs",
    "fs.0.total-bytes": 10 << 30, "fs.0.used-bytes": 3 << 30, "fs.0.disk.count": 2,
    "fs.0.disk.0.alias": "vda", "fs.0.disk.1.alias": "vdb",
    "fs.1.name": "dm-0", "fs.1.mountpoint": "/", "fs.1.fstype": "xfs",
    "fs.1.total-bytes": 10 << 30, "fs.1.used-bytes": 3 << 30, "fs.1.disk.count": 2,
    "fs.1.disk.0.alias": "vda", "fs.1.disk.1.alias": "vdb",
    "fs.2.name": "sysfs", "fs.2.mountpoint": "/sys", "fs.2.fstype": "sysfs",
}

CHANNEL = ("<domain><devices><channel type='unix'><target type='virtio' "
           "name='{name}'{state}/></channel></devices></domain>")


def families_of(*agents: AgentState, **counts: Any) -> dict[str, MetricFamily]:
    """The families of some agents' states, by name."""
    return {family.name: family for family in guest_agent_families(agents, **counts)}


def samples(family: MetricFamily) -> dict[tuple[str, ...], float]:
    """A family's samples as label values -> value."""
    return dict(family.samples)


def up_agent(domain: str, info: dict[str, Any], addresses: dict[str, Any],
             clock_offset: float | None = 0.125) -> AgentState:
    """A domain whose last poll was answered."""
    return AgentState(domain, up=True, last_success=1_800_000_000.5,
                      reading=GuestReading(info, addresses, clock_offset))


def test_the_lab_guests_file_system_addresses_and_os() -> None:
    """The lab guest's answers: /data's size and used bytes with its device, fstype and disk;
    one address series per address; OS, hostname and zone in one info series; users and
    clock offset; no load averages (libvirt 9.0 has no load group)."""
    out = families_of(up_agent("g", LAB_INFO, LAB_ADDRESSES))
    fs = ("g", "/data", "vda", "ext4", "vda")
    assert samples(out["libvirt_domain_guest_filesystem_size_bytes"]) == {fs: 24116224}
    assert samples(out["libvirt_domain_guest_filesystem_used_bytes"]) == {fs: 14336}
    assert samples(out["libvirt_domain_guest_interface_address_info"]) == {
        ("g", "eth0", "52:54:00:cf:7d:da", "ipv4", "10.0.2.15", "24"): 1,
        ("g", "lo", "00:00:00:00:00:00", "ipv4", "127.0.0.1", "8"): 1,
        ("g", "lo", "00:00:00:00:00:00", "ipv6", "::1", "128"): 1,
    }
    assert samples(out["libvirt_domain_guest_os_info"]) == {
        ("g", "", "", "", "6.1.0-57-amd64", "x86_64", "guest", "UTC"): 1}
    assert samples(out["libvirt_domain_guest_users"]) == {("g",): 0}
    assert samples(out["libvirt_domain_guest_timezone_offset_seconds"]) == {("g",): 0}
    assert samples(out["libvirt_domain_guest_clock_offset_seconds"]) == {("g",): 0.125}
    assert samples(out["libvirt_domain_guest_agent_up"]) == {("g",): 1}
    assert samples(out["libvirt_domain_guest_agent_last_success_timestamp_seconds"]) == {
        ("g",): 1_800_000_000.5}
    assert samples(out["libvirt_domain_guest_load_average"]) == {}


def test_load_averages_full_os_and_file_systems_without_sizes_or_listed_twice() -> None:
    """libvirt 11's load.1m/5m/15m become one series per window; the os-release fields fill
    the info labels; a file system on two disks names both; one listed twice gives one series;
    one without sizes gives none."""
    out = families_of(up_agent("w", RICH_INFO, {}, clock_offset=None))
    assert samples(out["libvirt_domain_guest_load_average"]) == {
        ("w", "1m"): 0.25, ("w", "5m"): 0.5, ("w", "15m"): 1.75}
    assert samples(out["libvirt_domain_guest_os_info"]) == {
        ("w", "debian", "Debian GNU/Linux", "12", "6.1.0-57-amd64", "x86_64", "web-01",
         "CET"): 1}
    assert out["libvirt_domain_guest_filesystem_used_bytes"].samples == [
        (("w", "/", "dm-0", "xfs", "vda,vdb"), 3 << 30)]
    assert samples(out["libvirt_domain_guest_timezone_offset_seconds"]) == {("w",): 3600}
    assert samples(out["libvirt_domain_guest_users"]) == {("w",): 2}
    assert samples(out["libvirt_domain_guest_clock_offset_seconds"]) == {}


def test_a_domain_whose_agent_did_not_answer_has_up_0_and_no_stale_facts() -> None:
    """Down: up 0, its last success kept, its poll outcomes counted, and no guest facts, even
    with an earlier answer at hand (it would pass for a current one)."""
    agent = AgentState("h", up=False, last_success=1_700_000_000.0,
                       reading=GuestReading(LAB_INFO, LAB_ADDRESSES, 0.0))
    agent.probes.update(ok=3, timeout=1, skipped=2)
    out = families_of(agent, abandoned_total=1, abandoned_outstanding=1)
    assert samples(out["libvirt_domain_guest_agent_up"]) == {("h",): 0}
    assert samples(out["libvirt_domain_guest_agent_last_success_timestamp_seconds"]) == {
        ("h",): 1_700_000_000.0}
    assert samples(out["virtmon_guest_agent_probes_total"]) == {
        ("h", "ok"): 3, ("h", "error"): 0, ("h", "timeout"): 1, ("h", "skipped"): 2}
    assert samples(out["virtmon_guest_agent_calls_abandoned_total"]) == {(): 1}
    assert samples(out["virtmon_guest_agent_calls_abandoned_outstanding"]) == {(): 1}
    for name in ("libvirt_domain_guest_filesystem_used_bytes", "libvirt_domain_guest_os_info",
                 "libvirt_domain_guest_interface_address_info"):
        assert out[name].samples == [], name


def test_families_match_their_declarations() -> None:
    """Every family made is declared with the same type, HELP and labels, in order, and every
    HELP names its libvirt source or virtmon's poller."""
    made = guest_agent_families([up_agent("g", RICH_INFO, LAB_ADDRESSES)])
    assert [(f.name, f.type, f.help, f.label_names) for f in made] == [
        (s.name, s.type, s.help, s.labels) for s in FAMILIES]
    for spec in FAMILIES:
        assert "libvirt" in spec.help or spec.name.startswith("virtmon_"), spec.name


def test_promtool_check_metrics_reports_nothing() -> None:
    """`promtool check metrics` finds no problem in the families of the lab's answers and of
    the richer ones."""
    text = render_text(guest_agent_families([up_agent("g", LAB_INFO, LAB_ADDRESSES),
                                              up_agent("w", RICH_INFO, LAB_ADDRESSES)]))
    result = subprocess.run([need("promtool"), "check", "metrics"], input=text,
                            capture_output=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


@pytest.mark.parametrize(("name", "state", "connected"), [
    ("org.qemu.guest_agent.0", " state='connected'", True),
    ("org.qemu.guest_agent.0", " state='disconnected'", False),
    ("org.qemu.guest_agent.0", "", False),  # a domain that is not running has no state
    ("org.virtmon.echo.0", " state='connected'", False),  # another channel's state
])
def test_the_agent_channel_state_read_from_live_xml(name: str, state: str,
                                                    connected: bool) -> None:
    """Only the guest agent's own channel, in state connected, counts as a connected agent."""
    assert agent_connected(CHANNEL.format(name=name, state=state)) is connected
