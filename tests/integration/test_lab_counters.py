"""Block, interface, vcpu and balloon series against direct bulk-stats readings around one cycle.

The metrics issue's "counters within one cycle": for a fresh running lab domain each test reads
one libvirt stats group directly (virDomainListGetStats, the bulk-stats API the daemon calls)
just before and just after one daemon cycle, and checks every series the group's collector
exports for that domain. Counters lie between the two readings and gauges that do not move equal
them, after the conversion libvirt's documented units call for (nanoseconds to seconds, KiB to
bytes). The expected series come from the collectors' own spec tables (the vcpu collector has
none, so its table is here and checked against the families it returns), and every key the
direct call returns must feed an exported series (as a value or a label) or be listed below as
deliberately not exported, with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import call, running_daemon
from tests.integration.test_lab_metrics import config, samples, value
from tests.waiting import fresh_cycle
from virtmon.collectors import STATS_GROUP_FLAGS
from virtmon.collectors import balloon as balloon_collector
from virtmon.collectors import block as block_collector
from virtmon.collectors import interface as interface_collector
from virtmon.collectors.balloon import BalloonCollector
from virtmon.collectors.base import Collector
from virtmon.collectors.block import BlockCollector
from virtmon.collectors.interface import InterfaceCollector
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.collectors.vcpu import VcpuCollector

pytestmark = pytest.mark.lab

Series = tuple[str, frozenset[tuple[str, str]]]

# libvirt's documented unit of each key (virConnectGetAllDomainStats): "ns" nanoseconds, "KiB",
# "B" bytes, "s" seconds, "count" a plain number (requests, packets, codes, booleans).
BLOCK_UNITS = {
    "rd.reqs": "count", "rd.bytes": "B", "rd.times": "ns",
    "wr.reqs": "count", "wr.bytes": "B", "wr.times": "ns",
    "fl.reqs": "count", "fl.times": "ns", "errors": "count",
    "capacity": "B", "allocation": "B", "physical": "B", "threshold": "B",
}
NET_UNITS = {
    "rx.bytes": "B", "rx.pkts": "count", "rx.errs": "count", "rx.drop": "count",
    "tx.bytes": "B", "tx.pkts": "count", "tx.errs": "count", "tx.drop": "count",
}
BALLOON_UNITS = {
    "balloon.current": "KiB", "balloon.maximum": "KiB", "balloon.unused": "KiB",
    "balloon.available": "KiB", "balloon.usable": "KiB", "balloon.rss": "KiB",
    "balloon.disk_caches": "KiB", "balloon.swap_in": "KiB", "balloon.swap_out": "KiB",
    "balloon.major_fault": "count", "balloon.minor_fault": "count",
    "balloon.hugetlb_pgalloc": "count", "balloon.hugetlb_pgfail": "count",
    "balloon.last-update": "s",
}
# The vcpu collector has no spec table: (key template, metric, unit), as in its collect().
VCPU_SPECS: tuple[tuple[str, str, str], ...] = (
    ("vcpu.current", "libvirt_domain_info_virtual_cpus", "count"),
    ("vcpu.current", "libvirt_domain_vcpu_current", "count"),
    ("vcpu.maximum", "libvirt_domain_vcpu_maximum", "count"),
    ("vcpu.{n}.state", "libvirt_domain_vcpu_state", "count"),
    ("vcpu.{n}.time", "libvirt_domain_vcpu_time_seconds_total", "ns"),
    ("vcpu.{n}.wait", "libvirt_domain_vcpu_wait_seconds_total", "ns"),
    ("vcpu.{n}.delay", "libvirt_domain_vcpu_delay_seconds_total", "ns"),
    ("vcpu.{n}.halted", "libvirt_domain_vcpu_halted", "count"),
)

# Gauges that may move between the two readings (every other gauge must equal both):
# "guest" values change only when the guest's balloon driver reports (every few seconds), so the
# exported one equals one of the readings; "host" is QEMU's resident set, which moves both ways.
MOVING_GAUGES = {
    "balloon.unused": "guest", "balloon.available": "guest", "balloon.usable": "guest",
    "balloon.disk_caches": "guest", "balloon.last-update": "guest", "balloon.rss": "host",
}
# QEMU's RSS moves by a few hundred KiB while idle; a unit error would be a factor of ~1000.
HOST_GAUGE_TOLERANCE = 0.25


@dataclass(frozen=True)
class Group:
    """One libvirt stats group and the collector exporting it."""

    name: str  # the STATS_GROUP_FLAGS key
    collector: Collector
    specs: tuple[tuple[str, str, str], ...]  # (key template, "{n}" = entry index; metric; unit)
    labels: Callable[[Mapping[str, Any], str], dict[str, str]]  # labels of entry n, besides domain
    label_keys: tuple[str, ...]  # key templates consumed as label values
    not_exported: tuple[tuple[str, str], ...]  # (key regex, reason)
    info: Callable[[Mapping[str, Any], str], dict[Series, None]] | None = None
    # Timestamps whose 0 means "never" (libvirt's balloon.last-update before the guest reports):
    # no series then.
    never_when_zero: tuple[str, ...] = ()


def _block_info(stats: Mapping[str, Any], domain: str) -> dict[Series, None]:
    """libvirt_domain_block_stats_info per disk, labels from name, path and backingIndex."""
    out: dict[Series, None] = {}
    for n in _indices(stats, r"block\.(\d+)\.name"):
        backing = stats.get(f"block.{n}.backingIndex")
        out[_series("libvirt_domain_block_stats_info", domain=domain,
                    target_device=stats[f"block.{n}.name"], path=stats.get(f"block.{n}.path") or "",
                    backing_index="" if backing is None else str(backing))] = None
    return out


BLOCK = Group(
    "block",
    BlockCollector(),
    tuple((f"block.{{n}}.{suffix}", metric, BLOCK_UNITS[suffix])
          for suffix, metric, *_ in block_collector._SPECS),
    lambda stats, n: {"target_device": stats[f"block.{n}.name"]},
    ("block.{n}.name", "block.{n}.path", "block.{n}.backingIndex"),
    (("block.count", "the number of entries: each entry's own series are the export"),),
    _block_info,
)
INTERFACE = Group(
    "interface",
    InterfaceCollector(),
    tuple((f"net.{{n}}.{suffix}", metric, NET_UNITS[suffix])
          for suffix, metric in interface_collector._SPECS),
    lambda stats, n: {"target_device": stats[f"net.{n}.name"]},
    ("net.{n}.name",),
    (("net.count", "the number of entries: each entry's own series are the export"),),
)
VCPU = Group(
    "vcpu",
    VcpuCollector(),
    VCPU_SPECS,
    lambda stats, n: {"vcpu": n},
    (),
    ((r"vcpu\.\d+\.[^.]+\.(cur|sum|max)",
      "KVM's per-vCPU hypervisor statistics: the opt-in vm collector's, off by default"),),
)
BALLOON = Group(
    "balloon",
    BalloonCollector(),
    tuple((key, metric, BALLOON_UNITS[key]) for key, metric, *_ in balloon_collector._SPECS),
    lambda stats, n: {},
    (),
    (),
    never_when_zero=("balloon.last-update",),
)


def _series(metric: str, **labels: str) -> Series:
    return metric, frozenset(labels.items())


def _pattern(template: str) -> re.Pattern[str]:
    """A key template as a regex; group 1 is the entry index where the template has one."""
    return re.compile(re.escape(template).replace(re.escape("{n}"), r"(\d+)"))


def _indices(stats: Mapping[str, Any], regex: str) -> list[str]:
    return [m.group(1) for key in stats if (m := re.fullmatch(regex, key))]


def families(collector: Collector) -> dict[str, str]:
    """Name and type of every family the collector returns (from an empty snapshot)."""
    empty = StatsSnapshot(taken_at=0.0, requested_groups=frozenset(), domains=())
    return {family.name: family.type for family in collector.collect(empty)}


def convert(raw: Any, unit: str, metric: str) -> float:
    """A libvirt value in the exported unit; the metric's name must say that unit."""
    seconds, in_bytes = "_seconds" in metric, "_bytes" in metric
    if unit == "ns":
        assert seconds, f"{metric} exports nanoseconds under a name without _seconds"
        return float(raw / 1e9)
    if unit == "KiB":
        assert in_bytes, f"{metric} exports KiB under a name without _bytes"
        return float(raw * 1024)
    if unit == "B":
        assert in_bytes, f"{metric} exports bytes under a name without _bytes"
        return float(raw)
    if unit == "s":
        assert seconds, f"{metric} exports seconds under a name without _seconds"
        return float(raw)
    assert unit == "count", unit
    assert not (seconds or in_bytes), f"{metric} exports a plain number under a unit name"
    return float(int(raw))  # booleans (vcpu.<n>.halted) become 0/1


def expected_series(
    group: Group, stats: Mapping[str, Any], domain: str
) -> tuple[dict[Series, tuple[str, str] | None], set[str]]:
    """Each series the direct reading implies (to its key and unit), and the keys it uses."""
    expected: dict[Series, tuple[str, str] | None] = {}
    used: set[str] = set()
    for template, metric, unit in group.specs:
        pattern = _pattern(template)
        for key in stats:
            match = pattern.fullmatch(key)
            if match is None:
                continue
            used.add(key)
            if key in group.never_when_zero and not stats[key]:
                continue
            labels = {"domain": domain}
            if pattern.groups:
                index = match.group(1)
                labels |= group.labels(stats, index)
                used |= {t.format(n=index) for t in group.label_keys} & stats.keys()
            series = _series(metric, **labels)
            assert series not in expected, f"two entries give {series}: a duplicate label"
            expected[series] = (key, unit)
    if group.info is not None:
        expected.update(group.info(stats, domain))
    return expected, used


async def around_one_cycle(
    daemon: Any, direct: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[dict[str, Any], dict[Series, float], dict[str, Any]]:
    """A direct reading, the exposition of the next cycle that read libvirt after it, another."""
    before = await direct()
    await fresh_cycle(daemon.scheduler)
    exported = samples(daemon.scheduler.exposition.text.decode())
    after = await direct()
    return before, exported, after


async def compare_group(
    group: Group, conn: Any, domain: str, short_tmp: Path,
    prepare: Callable[[Any], Awaitable[None]] | None = None,
) -> dict[Series, float]:
    """Check the group's exported series of `domain` against two direct readings; return them."""
    exported_families = families(group.collector)
    tested = {metric for _, metric, _ in group.specs}
    if group.info is not None:
        tested |= {"libvirt_domain_block_stats_info"}
    assert tested == exported_families.keys(), "the test's table must cover every family"
    dom = await call(conn.lookupByName, domain)
    if prepare is not None:
        await prepare(dom)
    flags = STATS_GROUP_FLAGS[group.name]

    async def direct() -> dict[str, Any]:
        records = await call(conn.domainListGetStats, [dom], flags, 0)
        return dict(records[0][1])

    async with running_daemon(config(short_tmp)) as daemon:
        before, exported, after = await around_one_cycle(daemon, direct)
    assert value(exported, "libvirt_domain_stats_incomplete", domain=domain) == 0

    expected, used = expected_series(group, before, domain)
    expected_after, used_after = expected_series(group, after, domain)
    assert expected.keys() == expected_after.keys(), "the direct readings list different series"
    unmapped = sorted(
        key for key in before.keys() | after.keys()
        if key not in used | used_after
        and not any(re.fullmatch(regex, key) for regex, _ in group.not_exported)
    )
    assert not unmapped, f"direct keys neither exported nor listed as not exported: {unmapped}"
    got = {s: v for s, v in exported.items()
           if s[0] in exported_families and ("domain", domain) in s[1]}
    missing, extra = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    assert not missing and not extra, f"missing {missing}, extra {extra}"

    wrong = []
    for series, source in expected.items():
        exported_value = got[series]
        if source is None:  # an info series: its labels are the check
            if exported_value != 1:
                wrong.append(f"{series}: {exported_value}, not 1")
            continue
        key, unit = source
        low = convert(before[key], unit, series[0])
        high = convert(after[key], unit, series[0])
        kind = exported_families[series[0]]
        if kind == "counter":
            ok = low <= exported_value <= high
        elif MOVING_GAUGES.get(key) == "guest":
            ok = exported_value in (low, high)
        elif MOVING_GAUGES.get(key) == "host":
            ok = (exported_value % 1024 == 0 if unit == "KiB" else True) and (
                min(low, high) * (1 - HOST_GAUGE_TOLERANCE) <= exported_value
                <= max(low, high) * (1 + HOST_GAUGE_TOLERANCE))
        else:
            ok = low == exported_value == high
        if not ok:
            wrong.append(f"{series[0]}{dict(series[1])} ({kind}) from {key} [{unit}]: exported "
                         f"{exported_value!r}, direct {before[key]!r} then {after[key]!r} "
                         f"(converted {low!r} then {high!r})")
    assert not wrong, "\n".join(wrong)
    return got


async def test_block_series_lie_within_two_direct_readings(
    lab: str, lab_conn: Any, lab_domain: str, short_tmp: Path
) -> None:
    """Every block series (a write threshold set too) matches direct block.<n>.* readings."""
    threshold = 48 * 1024 * 1024

    async def set_threshold(dom: Any) -> None:
        await call(dom.setBlockThreshold, "vda", threshold)

    got = await compare_group(BLOCK, lab_conn, lab_domain, short_tmp, set_threshold)
    labels = {"domain": lab_domain, "target_device": "vda"}
    assert got[_series("libvirt_domain_block_stats_threshold_bytes", **labels)] == threshold
    assert got[_series("libvirt_domain_block_stats_capacity_bytes", **labels)] == 64 * 1024**2


async def test_interface_series_lie_within_two_direct_readings(
    lab: str, lab_conn: Any, lab_domain: str, short_tmp: Path
) -> None:
    """Every interface counter matches direct net.<n>.* readings taken around one cycle."""
    got = await compare_group(INTERFACE, lab_conn, lab_domain, short_tmp)
    assert {metric for metric, _ in got} == {metric for _, metric, _ in INTERFACE.specs}


async def test_vcpu_series_lie_within_two_direct_readings(
    lab: str, lab_conn: Any, lab_domain: str, short_tmp: Path
) -> None:
    """Every vcpu series matches direct vcpu.* readings (times in seconds) around one cycle."""
    got = await compare_group(VCPU, lab_conn, lab_domain, short_tmp)
    assert got[_series("libvirt_domain_vcpu_state", domain=lab_domain, vcpu="0")] == 1
    assert got[_series("libvirt_domain_vcpu_maximum", domain=lab_domain)] == 1


async def test_balloon_series_lie_within_two_direct_readings(
    lab: str, lab_conn: Any, lab_domain: str, short_tmp: Path
) -> None:
    """Every balloon series matches direct balloon.* readings (KiB in bytes) around one cycle."""
    got = await compare_group(BALLOON, lab_conn, lab_domain, short_tmp)
    sizes = ("libvirt_domain_info_memory_usage_bytes", "libvirt_domain_memory_stats_maximum_bytes")
    for metric in sizes:
        assert got[_series(metric, domain=lab_domain)] == 64 * 1024**2
