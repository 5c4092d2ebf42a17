"""One collection cycle's libvirt calls: bulk domain stats, and node and host-interface calls.

This is rule 4 of shared/docs/ARCHITECTURE.md: one ``getAllDomainStats`` with exactly the
configured groups and NOWAIT (a domain stuck in a job cannot stall the cycle), no per-domain call.
Node and host-interface calls are a handful per cycle, whatever the number of domains.

The two reads, :func:`read_domains` and :func:`read_host`, are made at once on two connections
(each in a worker thread): the host's calls are round trips that would otherwise wait behind
the bulk call, and :func:`snapshot_of` puts their results together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import libvirt

from virtmon.collectors.snapshot import (
    DomainInfo,
    DomainRecord,
    HostInterface,
    LibvirtInfo,
    NodeStats,
    StatsSnapshot,
)
from virtmon.virt.handle import is_local

T = TypeVar("T")


def _maybe(fn: Callable[..., T], *args: Any) -> T | None:
    """The call's result, or None where the driver does not support it."""
    try:
        return fn(*args)
    except libvirt.libvirtError:
        return None


def domain_records(conn: Any, stats_flags: int,
                   backing_chain: bool = False) -> tuple[DomainRecord, ...]:
    """virConnectGetAllDomainStats(groups, NOWAIT): one call for every domain.

    ``backing_chain`` adds ``BACKING``: the block group then lists every layer of each disk's
    backing chain, not only the active one.
    """
    flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
    if backing_chain:
        flags |= libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING
    return tuple(
        DomainRecord(dom.name(), dom.UUIDString(), stats)
        for dom, stats in conn.getAllDomainStats(stats_flags, flags)
    )


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What changes rarely on a host: node info, CPU map and host interfaces.

    Read on the first cycle of a connection and then every few cycles (the scheduler decides),
    not every cycle: they cost several calls and almost never change.
    """

    info: tuple[Any, ...] | None
    cpu_map: tuple[bool, ...] | None
    interfaces: tuple[HostInterface, ...] | None

    @classmethod
    def of(cls, snapshot: StatsSnapshot) -> HostFacts:
        """The facts a snapshot carries."""
        node = snapshot.node
        return cls(node.info if node else None, node.cpu_map if node else None,
                   snapshot.host_interfaces)


# Page sizes asked for free pages: the base page, and x86's 2 MiB and 1 GiB huge pages.
PAGE_SIZES_KIB = (4, 2048, 1048576)


def _online_cpus(cpu_map: tuple[bool, ...] | None, active: int) -> list[int]:
    """The host CPUs to ask per-CPU statistics of: the online ones of the CPU map (an offline
    CPU keeps its number, so the ones after it are not shifted), else the first ``active``."""
    if cpu_map is not None:
        return [cpu for cpu, online in enumerate(cpu_map) if online]
    return list(range(active))


def _free_pages(conn: Any, cells: int) -> dict[int, dict[int, int]]:
    """virNodeGetFreePages for every size in one call; where libvirt refuses that (it fails the
    whole call for a size the host lacks, e.g. no 1 GiB pages), one call per size, so that the
    sizes the host has are still read."""
    pages = _maybe(conn.getFreePages, list(PAGE_SIZES_KIB), 0, cells)
    if pages is not None:
        return {int(cell): dict(sizes) for cell, sizes in pages.items()}
    out: dict[int, dict[int, int]] = {}
    for size in PAGE_SIZES_KIB:
        for cell, sizes in (_maybe(conn.getFreePages, [size], 0, cells) or {}).items():
            out.setdefault(int(cell), {}).update(sizes)
    return out


def node_stats(conn: Any, facts: HostFacts | None = None) -> NodeStats:
    """virNodeGetInfo, CPU and memory statistics, free pages, KSM parameters and the CPU map.

    With ``facts``, node info and the CPU map are taken from them instead of asked again.
    """
    info = facts.info if facts else _maybe(conn.getInfo)
    cells = int(info[4]) if info else 0
    if facts:
        cpu_map_flags = facts.cpu_map
    else:
        cpu_map = _maybe(conn.getCPUMap)
        cpu_map_flags = tuple(bool(b) for b in cpu_map[1]) if cpu_map else None
    per_cpu: dict[int, Mapping[str, int]] = {}
    for cpu in _online_cpus(cpu_map_flags, int(info[2]) if info else 0):
        stats = _maybe(conn.getCPUStats, cpu)
        if stats is not None:
            per_cpu[cpu] = stats
    per_cell: dict[int, Mapping[str, int]] = {}
    free_pages: dict[int, dict[int, int]] = {}
    for cell in range(cells):
        memory = _maybe(conn.getMemoryStats, cell)
        if memory is not None:
            per_cell[cell] = memory
    if cells:
        free_pages = _free_pages(conn, cells)
    return NodeStats(
        info=tuple(info) if info else None,
        cpu_total=_maybe(conn.getCPUStats, libvirt.VIR_NODE_CPU_STATS_ALL_CPUS),
        cpu_per_cpu=per_cpu,
        memory_total=_maybe(conn.getMemoryStats, libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS),
        memory_per_cell=per_cell,
        free_pages=free_pages,
        memory_parameters=_maybe(conn.getMemoryParameters) or {},
        cpu_map=cpu_map_flags,
    )


def host_interfaces(conn: Any) -> tuple[HostInterface, ...] | None:
    """virConnectListAllInterfaces: name, MAC, active."""
    # Two listings (active, inactive) instead of one isActive call per interface.
    active = _maybe(conn.listAllInterfaces, libvirt.VIR_CONNECT_LIST_INTERFACES_ACTIVE)
    inactive = _maybe(conn.listAllInterfaces, libvirt.VIR_CONNECT_LIST_INTERFACES_INACTIVE)
    if active is None or inactive is None:
        return None
    return tuple(
        HostInterface(i.name(), i.MACString(), is_active)
        for listing, is_active in ((active, True), (inactive, False))
        for i in listing
    )


def libvirt_info(conn: Any, uri: str) -> LibvirtInfo:
    """Versions and hypervisor of a live connection."""
    return LibvirtInfo(
        connected=True,
        library_version=_maybe(libvirt.getVersion),
        daemon_version=_maybe(conn.getLibVersion),
        hypervisor=_maybe(conn.getType),
        hypervisor_version=_maybe(conn.getVersion),
        uri=uri,
    )


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """What one collection cycle asks libvirt for (built on the loop, read in a worker thread).

    ``stats_flags`` and ``requested_groups``: the stats groups of the enabled collectors;
    ``known_info``: versions and hypervisor already read on this connection (they cannot change
    while it lasts), saving four calls a cycle; ``facts``: node info, CPU map and host
    interfaces from a recent cycle; ``backing_chain``: every layer of each disk.
    """

    uri: str
    stats_flags: int
    requested_groups: frozenset[str]
    domain_info: Mapping[str, DomainInfo]
    with_node: bool = True
    with_interfaces: bool = True
    known_info: LibvirtInfo | None = None
    facts: HostFacts | None = None
    backing_chain: bool = False


@dataclass(frozen=True, slots=True)
class HostRead:
    """What a cycle reads of the host itself: node statistics, host interfaces, versions."""

    node: NodeStats | None
    interfaces: tuple[HostInterface, ...] | None
    libvirt: LibvirtInfo


def read_domains(conn: Any, request: SnapshotRequest) -> tuple[DomainRecord, ...]:
    """The bulk call's records for every domain (blocking: in a worker thread)."""
    if not request.stats_flags:
        return ()
    return domain_records(conn, request.stats_flags, request.backing_chain)


def read_host(conn: Any, request: SnapshotRequest) -> HostRead:
    """Node statistics, host interfaces and versions, each only where the request needs it
    (blocking: in a worker thread)."""
    facts = request.facts
    node = node_stats(conn, facts) if request.with_node else None
    if not request.with_interfaces:
        interfaces = None
    elif facts is not None:
        interfaces = facts.interfaces
    else:
        interfaces = host_interfaces(conn)
    return HostRead(node, interfaces, request.known_info or libvirt_info(conn, request.uri))


def snapshot_of(request: SnapshotRequest, records: tuple[DomainRecord, ...],
                host: HostRead) -> StatsSnapshot:
    """The cycle's snapshot from its two reads, stamped now (when both have answered)."""
    return StatsSnapshot(
        taken_at=time.time(),
        monotonic_at=time.monotonic() if is_local(request.uri) else None,
        requested_groups=request.requested_groups,
        domains=records,
        domain_info=dict(request.domain_info),
        node=host.node,
        host_interfaces=host.interfaces,
        libvirt=host.libvirt,
    )


def disconnected_snapshot(uri: str) -> StatsSnapshot:
    """What a cycle sees while libvirt is unreachable: ``libvirt_up 0`` and nothing else."""
    return StatsSnapshot(
        taken_at=time.time(), requested_groups=frozenset(), domains=(),
        libvirt=LibvirtInfo(connected=False, uri=uri),
    )
