"""What each guest's agent says about the guest, as metric families.

The readings come from the guest-agent poller (virtmon/virt/guest_agent.py), which asks only the
domains whose agent is connected, on its own interval: ``virDomainGetGuestInfo`` (users, OS,
time zone, hostname, file systems, and load averages where libvirt has that group),
``virDomainInterfaceAddresses`` with the agent as source, and ``virDomainGetTime``. This module
is pure: readings in, families out, no libvirt call.

Sample::

    # TYPE libvirt_domain_guest_agent_up gauge
    libvirt_domain_guest_agent_up{domain="web-01"} 1
    # TYPE libvirt_domain_guest_filesystem_used_bytes gauge
    libvirt_domain_guest_filesystem_used_bytes{domain="web-01",mountpoint="/data",device="vda",fstype="ext4",target_device="vda"} 14336
    # TYPE libvirt_domain_guest_os_info gauge
    libvirt_domain_guest_os_info{domain="web-01",os_id="debian",...,hostname="web-01",timezone="UTC"} 1
    # TYPE libvirt_domain_guest_interface_address_info gauge
    libvirt_domain_guest_interface_address_info{domain="web-01",interface="eth0",hwaddr="52:54:00:cf:7d:da",family="ipv4",address="10.0.2.15",prefix="24"} 1
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

__all__ = ["FAMILIES", "AgentState", "GuestReading", "guest_agent_families"]


def _help(what: str, source: str) -> str:
    """HELP naming the libvirt source; the values are as old as the poller's last round."""
    return f"{what} (libvirt {source}; value from the last guest-agent poll)."


# The OS keys of virDomainGetGuestInfo that become labels of the OS info metric.
OS_LABELS = (("os_id", "os.id"), ("os_name", "os.name"), ("os_version_id", "os.version-id"),
             ("kernel_release", "os.kernel-release"), ("machine", "os.machine"))
# Load-average keys of the guest-info "load" group (libvirt 11 and later), by window.
LOAD_KEYS = (("1m", "load.1m"), ("5m", "load.5m"), ("15m", "load.15m"))
# virDomainInterfaceAddresses' address types (VIR_IP_ADDR_TYPE_IPV4, _IPV6).
ADDRESS_FAMILIES = {0: "ipv4", 1: "ipv6"}

FS_LABELS = ("domain", "mountpoint", "device", "fstype", "target_device")

FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_guest_agent_up", "gauge",
        _help("Whether the guest agent answered the last poll (1) or not (0)",
              "virDomainGetGuestInfo"),
        ("domain",), unit="1 or 0",
        source="the last poll of a domain whose agent channel is connected"),
    FamilySpec(
        "libvirt_domain_guest_agent_last_success_timestamp_seconds", "gauge",
        _help("Unix time of the last poll the guest agent answered", "virDomainGetGuestInfo"),
        ("domain",), unit="Unix time", source="the end of the domain's last answered poll"),
    FamilySpec(
        "libvirt_domain_guest_filesystem_size_bytes", "gauge",
        _help("Size of a file system in the guest, in bytes (what df counts: used and "
              "available to users)", "virDomainGetGuestInfo fs.<n>.total-bytes"),
        FS_LABELS, unit="bytes", source="`fs.<n>.total-bytes` of virDomainGetGuestInfo"),
    FamilySpec(
        "libvirt_domain_guest_filesystem_used_bytes", "gauge",
        _help("Bytes used in a file system of the guest",
              "virDomainGetGuestInfo fs.<n>.used-bytes"),
        FS_LABELS, unit="bytes", source="`fs.<n>.used-bytes` of virDomainGetGuestInfo"),
    FamilySpec(
        "libvirt_domain_guest_os_info", "info",
        _help("The guest's operating system, hostname and time zone",
              "virDomainGetGuestInfo os.*, hostname, timezone.name"),
        ("domain", *(label for label, _ in OS_LABELS), "hostname", "timezone"), unit="info",
        source="`os.*`, `hostname`, `timezone.name` of virDomainGetGuestInfo (empty where the "
               "guest does not say)"),
    FamilySpec(
        "libvirt_domain_guest_timezone_offset_seconds", "gauge",
        _help("Offset of the guest's time zone from UTC, in seconds",
              "virDomainGetGuestInfo timezone.offset"),
        ("domain",), unit="seconds", source="`timezone.offset` of virDomainGetGuestInfo"),
    FamilySpec(
        "libvirt_domain_guest_users", "gauge",
        _help("Users logged in to the guest", "virDomainGetGuestInfo user.count"),
        ("domain",), unit="users", source="`user.count` of virDomainGetGuestInfo"),
    FamilySpec(
        "libvirt_domain_guest_load_average", "gauge",
        _help("The guest's load average over a window",
              "virDomainGetGuestInfo load.1m, load.5m, load.15m"),
        ("domain", "window"), unit="runnable tasks",
        source="`load.<window>` of virDomainGetGuestInfo (libvirt 11 and later)"),
    FamilySpec(
        "libvirt_domain_guest_interface_address_info", "info",
        _help("An address of a network interface in the guest",
              "virDomainInterfaceAddresses, source agent"),
        ("domain", "interface", "hwaddr", "family", "address", "prefix"), unit="info",
        source="virDomainInterfaceAddresses with VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT"),
    FamilySpec(
        "libvirt_domain_guest_clock_offset_seconds", "gauge",
        _help("The guest's clock minus the host's, in seconds (the host's read around the "
              "call)", "virDomainGetTime"),
        ("domain",), unit="seconds",
        source="virDomainGetTime, less the host's time in the middle of the call"),
    FamilySpec(
        "virtmon_guest_agent_probes_total", "counter",
        "Polls of a domain's guest agent (one virDomainGetGuestInfo, "
        "virDomainInterfaceAddresses and virDomainGetTime each), by outcome.",
        ("domain", "outcome"), unit="polls",
        source="the guest-agent poller (outcome: ok, error, timeout, skipped while a poll "
               "still hangs)"),
    FamilySpec(
        "virtmon_guest_agent_calls_abandoned_total", "counter",
        "Guest-agent polls abandoned after overrunning their deadline.",
        unit="calls", source="guest-agent polls abandoned past `collect.guest_agent_timeout`"),
    FamilySpec(
        "virtmon_guest_agent_calls_abandoned_outstanding", "gauge",
        "Abandoned guest-agent polls still blocked in libvirt.",
        unit="calls", source="abandoned guest-agent polls still blocked in libvirt"),
    FamilySpec(
        "virtmon_guest_agent_poll_duration_seconds", "gauge",
        "Wall time of the last round of guest-agent polls, in seconds.",
        unit="seconds", source="the guest-agent poller's last round"),
)
_FAMILY = by_name(FAMILIES)
PROBE_OUTCOMES = ("ok", "error", "timeout", "skipped")


@dataclass(frozen=True, slots=True)
class GuestReading:
    """One answered poll of a guest's agent: the three calls' results as libvirt gave them."""

    info: Mapping[str, Any]  # virDomainGetGuestInfo's typed parameters
    addresses: Mapping[str, Any]  # virDomainInterfaceAddresses: name -> {hwaddr, addrs}
    clock_offset: float | None  # virDomainGetTime less the host's time


@dataclass(slots=True)
class AgentState:
    """What the poller knows of one domain whose agent was connected."""

    domain: str
    up: bool = False
    last_success: float | None = None
    reading: GuestReading | None = None  # the last poll's, None when it was not answered
    probes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBE_OUTCOMES, 0))


def filesystems(info: Mapping[str, Any]) -> Iterable[tuple[tuple[str, ...], Any, Any]]:
    """(labels after the domain, total bytes, used bytes) of each ``fs.<n>.*``; a size the
    guest does not give is None."""
    seen: set[tuple[str, ...]] = set()
    for index in range(int(info.get("fs.count", 0))):
        prefix = f"fs.{index}."
        mountpoint = info.get(prefix + "mountpoint")
        if mountpoint is None:
            continue
        disks = ",".join(str(info[f"{prefix}disk.{d}.alias"])
                         for d in range(int(info.get(prefix + "disk.count", 0)))
                         if f"{prefix}disk.{d}.alias" in info)
        labels = (str(mountpoint), str(info.get(prefix + "name", "")),
                  str(info.get(prefix + "fstype", "")), disks)
        if labels in seen:  # the same mount listed twice would repeat a series
            continue
        seen.add(labels)
        yield labels, info.get(prefix + "total-bytes"), info.get(prefix + "used-bytes")


def addresses(listing: Mapping[str, Any]) -> Iterable[tuple[str, ...]]:
    """(interface, hwaddr, family, address, prefix) of each address the agent reported."""
    seen: set[tuple[str, ...]] = set()
    for interface, details in sorted(listing.items()):
        hwaddr = str(details.get("hwaddr") or "")
        for address in details.get("addrs") or ():
            family = ADDRESS_FAMILIES.get(address.get("type"), f"type_{address.get('type')}")
            labels = (str(interface), hwaddr, family, str(address.get("addr", "")),
                      str(address.get("prefix", "")))
            if labels not in seen:
                seen.add(labels)
                yield labels


def guest_agent_families(
    agents: Iterable[AgentState], abandoned_total: int = 0, abandoned_outstanding: int = 0,
    poll_duration: float = 0.0,
) -> list[MetricFamily]:
    """Every family of the poller's last results (one ``AgentState`` per domain)."""
    up = _FAMILY["libvirt_domain_guest_agent_up"].new()
    last = _FAMILY["libvirt_domain_guest_agent_last_success_timestamp_seconds"].new()
    size = _FAMILY["libvirt_domain_guest_filesystem_size_bytes"].new()
    used = _FAMILY["libvirt_domain_guest_filesystem_used_bytes"].new()
    os_info = _FAMILY["libvirt_domain_guest_os_info"].new()
    tz_offset = _FAMILY["libvirt_domain_guest_timezone_offset_seconds"].new()
    users = _FAMILY["libvirt_domain_guest_users"].new()
    load = _FAMILY["libvirt_domain_guest_load_average"].new()
    address_info = _FAMILY["libvirt_domain_guest_interface_address_info"].new()
    clock = _FAMILY["libvirt_domain_guest_clock_offset_seconds"].new()
    probes = _FAMILY["virtmon_guest_agent_probes_total"].new()
    for agent in agents:
        domain = agent.domain
        up.add((domain,), 1 if agent.up else 0)
        if agent.last_success is not None:
            last.add((domain,), agent.last_success)
        for outcome, count in agent.probes.items():
            probes.add((domain, outcome), count)
        reading = agent.reading
        if not agent.up or reading is None:
            continue  # a guest that did not answer has no current facts
        info = reading.info
        for labels, total, in_use in filesystems(info):
            if total is not None:
                size.add((domain, *labels), total)
            if in_use is not None:
                used.add((domain, *labels), in_use)
        if any(key.startswith(("os.", "hostname", "timezone.")) for key in info):
            os_info.add((domain, *(str(info.get(key, "")) for _, key in OS_LABELS),
                         str(info.get("hostname", "")), str(info.get("timezone.name", ""))), 1)
        if "timezone.offset" in info:
            tz_offset.add((domain,), info["timezone.offset"])
        if "user.count" in info:
            users.add((domain,), info["user.count"])
        for window, key in LOAD_KEYS:
            if key in info:
                load.add((domain, window), info[key])
        for labels in addresses(reading.addresses):
            address_info.add((domain, *labels), 1)
        if reading.clock_offset is not None:
            clock.add((domain,), reading.clock_offset)
    abandoned = _FAMILY["virtmon_guest_agent_calls_abandoned_total"].new()
    abandoned.add((), abandoned_total)
    outstanding = _FAMILY["virtmon_guest_agent_calls_abandoned_outstanding"].new()
    outstanding.add((), abandoned_outstanding)
    duration = _FAMILY["virtmon_guest_agent_poll_duration_seconds"].new()
    duration.add((), poll_duration)
    return [up, last, size, used, os_info, tz_offset, users, load, address_info, clock, probes,
            abandoned, outstanding, duration]
