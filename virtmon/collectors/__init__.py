"""Pure collectors: `StatsSnapshot` in, metric families out (policy in `base.py`).

`COLLECTORS` maps each collector's name (its file name, its `--collector.NAME` flag and its
`collector` label) to its class. Each class declares the libvirt stats groups it reads
(`stats_groups`); `stats_groups_for` / `stats_flags_for` tell the scheduler which groups the
enabled collectors need, so one `getAllDomainStats` asks for exactly those. libvirt is imported
here for its constants only.
"""

from __future__ import annotations

from collections.abc import Iterable

import libvirt

from virtmon.collectors.admin import AdminCollector
from virtmon.collectors.balloon import BalloonCollector
from virtmon.collectors.base import Collector, NoData, run_collectors
from virtmon.collectors.block import BlockCollector
from virtmon.collectors.cpu import CpuCollector
from virtmon.collectors.dirtyrate import DirtyrateCollector
from virtmon.collectors.domain_info import DomainInfoCollector
from virtmon.collectors.events import EventsCollector
from virtmon.collectors.host_interfaces import HostInterfacesCollector
from virtmon.collectors.interface import InterfaceCollector
from virtmon.collectors.iothread import IothreadCollector
from virtmon.collectors.memory_bandwidth import MemoryBandwidthCollector
from virtmon.collectors.node import NodeCollector
from virtmon.collectors.perf import PerfCollector
from virtmon.collectors.state import StateCollector
from virtmon.collectors.vcpu import VcpuCollector
from virtmon.collectors.vm import VmCollector

__all__ = [
    "COLLECTORS",
    "DEFAULT_ENABLED",
    "STATS_GROUP_FLAGS",
    "Collector",
    "NoData",
    "build_collectors",
    "run_collectors",
    "stats_flags_for",
    "stats_groups_for",
]

# Collector name -> class, in exposition order.
COLLECTORS: dict[str, type[Collector]] = {
    "domain_info": DomainInfoCollector,
    "state": StateCollector,
    "cpu": CpuCollector,
    "balloon": BalloonCollector,
    "vcpu": VcpuCollector,
    "interface": InterfaceCollector,
    "block": BlockCollector,
    "perf": PerfCollector,
    "iothread": IothreadCollector,
    "memory_bandwidth": MemoryBandwidthCollector,
    "dirtyrate": DirtyrateCollector,
    "vm": VmCollector,
    "node": NodeCollector,
    "host_interfaces": HostInterfacesCollector,
    "admin": AdminCollector,
    "events": EventsCollector,
}

# `vm` is opt-in: unstable hypervisor names and about 16 + 47 per vCPU series per domain.
DEFAULT_ENABLED: frozenset[str] = frozenset(COLLECTORS) - {"vm"}

# libvirt stats group name (as in StatsSnapshot.requested_groups) -> virDomainStatsTypes bit.
STATS_GROUP_FLAGS: dict[str, int] = {
    "state": libvirt.VIR_DOMAIN_STATS_STATE,
    "cpu_total": libvirt.VIR_DOMAIN_STATS_CPU_TOTAL,
    "balloon": libvirt.VIR_DOMAIN_STATS_BALLOON,
    "vcpu": libvirt.VIR_DOMAIN_STATS_VCPU,
    "interface": libvirt.VIR_DOMAIN_STATS_INTERFACE,
    "block": libvirt.VIR_DOMAIN_STATS_BLOCK,
    "perf": libvirt.VIR_DOMAIN_STATS_PERF,
    "iothread": libvirt.VIR_DOMAIN_STATS_IOTHREAD,
    "memory": libvirt.VIR_DOMAIN_STATS_MEMORY,
    "dirtyrate": libvirt.VIR_DOMAIN_STATS_DIRTYRATE,
    "vm": libvirt.VIR_DOMAIN_STATS_VM,
}

def _check(names: Iterable[str]) -> list[str]:
    names = list(names)
    unknown = sorted(set(names) - COLLECTORS.keys())
    if unknown:
        raise ValueError(f"unknown collectors: {', '.join(unknown)}")
    return names


def stats_groups_for(enabled: Iterable[str]) -> list[str]:
    """The libvirt stats groups the enabled collectors need, in `STATS_GROUP_FLAGS` order."""
    wanted = {group for name in _check(enabled) for group in COLLECTORS[name].stats_groups}
    return [group for group in STATS_GROUP_FLAGS if group in wanted]


def stats_flags_for(enabled: Iterable[str]) -> int:
    """The `stats` argument of getAllDomainStats for the enabled collectors."""
    flags = 0
    for group in stats_groups_for(enabled):
        flags |= STATS_GROUP_FLAGS[group]
    return flags


def build_collectors(enabled: Iterable[str]) -> list[Collector]:
    """Fresh collector instances for the enabled names, in `COLLECTORS` order."""
    wanted = set(_check(enabled))
    return [cls() for name, cls in COLLECTORS.items() if name in wanted]
