"""Fixture loading and snapshot building shared by the collector tests and the benchmark."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from virtmon.collectors import STATS_GROUP_FLAGS
from virtmon.collectors.snapshot import (
    DomainInfo,
    DomainRecord,
    HostInterface,
    LibvirtInfo,
    NodeStats,
    StatsSnapshot,
)

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"
ALL_GROUPS = frozenset(STATS_GROUP_FLAGS)


def load_records(path: Path) -> tuple[DomainRecord, ...]:
    """Records from a fixture file: a JSON list of {"name", "uuid", "stats"}."""
    with path.open(encoding="utf-8") as f:
        raw = json.load(f)
    return tuple(DomainRecord(r["name"], r["uuid"], r["stats"]) for r in raw)


def example_node() -> NodeStats:
    """A 2-CPU, 1-cell host as the lab's machines report it (values in libvirt's units)."""
    return NodeStats(
        # As libvirt-python's getInfo() answers on the lab: memory in MiB.
        info=("x86_64", 24064, 2, 2394, 1, 1, 2, 1),
        cpu_total={
            "kernel": 1_500_000_000_000,
            "user": 4_200_000_000_000,
            "idle": 9_000_000_000_000,
            "iowait": 12_000_000_000,
        },
        cpu_per_cpu={
            0: {
                "kernel": 750_000_000_000,
                "user": 2_100_000_000_000,
                "idle": 4_500_000_000_000,
                "iowait": 6_000_000_000,
            },
            1: {
                "kernel": 750_000_000_000,
                "user": 2_100_000_000_000,
                "idle": 4_500_000_000_000,
                "iowait": 6_000_000_000,
            },
        },
        memory_total={"total": 24641536, "free": 20123456, "buffers": 123456, "cached": 2345678},
        memory_per_cell={0: {"total": 4194304, "free": 2097152}},
        free_pages={0: {4: 503086, 2048: 0, 1048576: 0}},
        memory_parameters={
            "shm_pages_to_scan": 100,
            "shm_sleep_millisecs": 20,
            "shm_pages_shared": 0,
            "shm_pages_sharing": 0,
            "shm_pages_unshared": 0,
            "shm_pages_volatile": 0,
            "shm_full_scans": 0,
            "shm_merge_across_nodes": 1,
        },
        cpu_map=(True, True),
    )


def example_info(records: Iterable[DomainRecord]) -> dict[str, DomainInfo]:
    """XML-cache entries for the records: persistent hvm domains, the first with metadata."""
    info: dict[str, DomainInfo] = {}
    for index, record in enumerate(records):
        labels = {"project": "shop", "instance-id": "i-0001"} if index == 0 else {}
        info[record.uuid] = DomainInfo(
            record.name,
            record.uuid,
            "hvm",
            persistent=True,
            autostart=index == 0,
            metadata_labels=labels,
        )
    return info


def make_snapshot(
    records: tuple[DomainRecord, ...],
    *,
    groups: frozenset[str] = ALL_GROUPS,
    with_host: bool = True,
) -> StatsSnapshot:
    """A snapshot of `records` with XML info, and (optionally) node, interfaces and versions."""
    return StatsSnapshot(
        taken_at=1_728_120_434.0,
        monotonic_at=4_000.0,  # the host has been up for about an hour (CLOCK_MONOTONIC)
        requested_groups=groups,
        domains=records,
        domain_info=example_info(records),
        node=example_node() if with_host else None,
        host_interfaces=(
            (
                HostInterface("eth0", "52:54:00:12:34:56", True),
                HostInterface("lo", "00:00:00:00:00:00", True),
            )
            if with_host
            else None
        ),
        libvirt=LibvirtInfo(True, 9000000, 9000000, "QEMU", 7002000, "qemu:///system"),
    )
