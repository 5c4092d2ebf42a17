"""Immutable input of the collectors: everything one collection cycle learned.

The scheduler (in the core) fills a `StatsSnapshot` from one `getAllDomainStats` call, the node
calls and the event-refreshed XML cache; collectors only read it. Nothing here imports libvirt:
the values are the plain Python objects libvirt-python returns (ints, bools, strings).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # for annotations only: their modules import this one
    from virtmon.admin.stats import AdminStats
    from virtmon.events.counters import EventCounts

__all__ = [
    "DomainInfo",
    "DomainRecord",
    "HostInterface",
    "LibvirtInfo",
    "NodeStats",
    "StatsSnapshot",
]


class DomainRecord(NamedTuple):
    """One domain's bulk statistics, `virDomainStatsRecord.stats` exactly as libvirt returns it.

    `stats` is the flat dict of `conn.getAllDomainStats()`, e.g. ``{"state.state": 1,
    "cpu.time": 486629513000, "net.0.name": "vnet0", "vcpu.0.blocking.cur": True}``. A named
    tuple, not a frozen dataclass: a cycle makes one per domain, and one costs half as much.
    """

    name: str
    uuid: str
    stats: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """What the cached domain XML and metadata say about a domain (refreshed by events)."""

    name: str
    uuid: str
    os_type: str
    persistent: bool
    autostart: bool
    metadata_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeStats:
    """Host statistics from the node calls of one cycle; a `None` field was not available."""

    # virNodeGetInfo: [model, memory KiB, cpus, mhz, nodes, sockets/node, cores/socket, threads]
    info: tuple[Any, ...] | None = None
    # virNodeGetCPUStats(-1): {"kernel": ns, "user": ns, "idle": ns, "iowait": ns}
    cpu_total: Mapping[str, int] | None = None
    # virNodeGetCPUStats(n) for each CPU n
    cpu_per_cpu: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    # virNodeGetMemoryStats(-1): {"total", "free", "buffers", "cached"} in KiB
    memory_total: Mapping[str, int] | None = None
    # virNodeGetMemoryStats(cell) for each NUMA cell, KiB
    memory_per_cell: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    # virNodeGetFreePages: cell -> page size KiB -> free page count
    free_pages: Mapping[int, Mapping[int, int]] = field(default_factory=dict)
    # virNodeGetMemoryParameters: the KSM "shm_*" parameters
    memory_parameters: Mapping[str, int] = field(default_factory=dict)
    # virNodeGetCPUMap: online flag per CPU
    cpu_map: tuple[bool, ...] | None = None


@dataclass(frozen=True, slots=True)
class HostInterface:
    """One host network interface from virConnectListAllInterfaces."""

    name: str
    mac: str
    active: bool


@dataclass(frozen=True, slots=True)
class LibvirtInfo:
    """The connection and versions; versions as libvirt encodes them (major*1e6+minor*1e3+micro)."""

    connected: bool
    library_version: int | str | None = None
    daemon_version: int | str | None = None
    hypervisor: str | None = None
    hypervisor_version: int | str | None = None
    uri: str | None = None


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Everything one collection cycle produced; collectors read it and nothing else.

    `requested_groups` holds the libvirt stats group names asked for (the enabled collectors'
    `stats_groups`, see `virtmon.collectors.STATS_GROUP_FLAGS`), so that a group that was asked
    for but is missing from a record can be told from one that was never requested.
    """

    taken_at: float
    requested_groups: frozenset[str]
    domains: tuple[DomainRecord, ...]
    domain_info: Mapping[str, DomainInfo] = field(default_factory=dict)  # by uuid
    node: NodeStats | None = None
    host_interfaces: tuple[HostInterface, ...] | None = None
    libvirt: LibvirtInfo | None = None
    # The admin helper's answer for this cycle: its statistics, the error it gave, or None when
    # the admin collector is off.
    admin: AdminStats | Exception | None = None
    # The event counters' copy for this cycle, or None when the events collector is off.
    events: EventCounts | None = None
    # CLOCK_MONOTONIC at ``taken_at`` when libvirt runs on this host (None for a remote one):
    # QEMU states some times on that clock (a dirty-rate calculation's start).
    monotonic_at: float | None = None
