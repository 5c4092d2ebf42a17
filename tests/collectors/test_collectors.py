"""Behaviour of the individual collectors and of the run_collectors adapter."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import virtmon.collectors as collectors_pkg
from virtmon.admin.stats import AdminStats, ServerStats
from virtmon.collectors import (
    COLLECTORS,
    DEFAULT_ENABLED,
    STATS_GROUP_FLAGS,
    NoData,
    build_collectors,
    run_collectors,
    stats_flags_for,
    stats_groups_for,
)
from virtmon.collectors.balloon import BalloonCollector
from virtmon.collectors.base import FACTS_EVERY
from virtmon.collectors.block import BlockCollector
from virtmon.collectors.cpu import CpuCollector
from virtmon.collectors.domain_info import DomainInfoCollector, metadata_label_name
from virtmon.collectors.interface import InterfaceCollector
from virtmon.collectors.snapshot import DomainInfo, DomainRecord, StatsSnapshot
from virtmon.collectors.vm import VmCollector
from virtmon.events.counters import EventCounts
from virtmon.exposition.family import FamilySpec, MetricFamily
from virtmon.exposition.render import render_text

from .snapshots import ALL_GROUPS, FIXTURES, load_records, make_snapshot

KVM = FIXTURES / "kvm_running.json"
EDGE = FIXTURES / "edge_cases.json"


def _snapshot(*records: DomainRecord, groups: frozenset[str] = ALL_GROUPS) -> StatsSnapshot:
    return StatsSnapshot(taken_at=0.0, requested_groups=groups, domains=records)


def _values(families: Iterable[MetricFamily], name: str) -> dict[tuple[str, ...], float]:
    return {labels: value for f in families if f.name == name for labels, value in f.samples}


def _all_families(path: Path, names: Iterable[str] = COLLECTORS) -> list[MetricFamily]:
    families, _ = run_collectors(build_collectors(names), make_snapshot(load_records(path)))
    return families


def test_units_are_converted_to_seconds_and_bytes() -> None:
    """ns become seconds, KiB become bytes, MiB/s become bytes/s; raw counts stay raw."""
    families = _all_families(FIXTURES / "kvm_running.json")
    assert _values(families, "libvirt_domain_info_cpu_time_seconds_total")[("web-01",)] == (
        pytest.approx(486.629513)
    )
    assert _values(families, "libvirt_domain_info_memory_usage_bytes")[("web-01",)] == (
        2097152 * 1024
    )
    assert _values(families, "libvirt_domain_memory_stats_rss_bytes")[("web-01",)] == 1388484 * 1024
    assert _values(families, "libvirt_domain_block_stats_read_time_seconds_total")[
        ("web-01", "vda")
    ] == pytest.approx(65.945020582)
    assert _values(families, "libvirt_domain_vcpu_delay_seconds_total")[
        ("web-01", "0")
    ] == pytest.approx(34.399069382)
    assert _values(families, "libvirt_domain_dirtyrate_bytes_per_second")[("db-02",)] == 4 << 20
    assert _values(families, "libvirt_domain_iothread_poll_max_seconds")[
        ("db-02", "1")
    ] == pytest.approx(32768e-9)
    assert (
        _values(families, "libvirt_domain_block_stats_read_bytes_total")[("web-01", "vda")]
        == 1537007104
    )


def test_empty_nic_names_get_unique_stable_names() -> None:
    """Empty or repeated NIC names become net<index>; no series is duplicated, twice the same."""
    stats: dict[str, Any] = {"net.count": 4}
    for index, name in enumerate(["", "net0", "", "eth"]):
        stats[f"net.{index}.name"] = name
        stats[f"net.{index}.rx.bytes"] = index
    record = DomainRecord("d", "u", stats)
    first = InterfaceCollector().collect(_snapshot(record))
    second = InterfaceCollector().collect(_snapshot(record))
    rx = _values(first, "libvirt_domain_interface_stats_receive_bytes_total")
    assert rx == {("d", "net0"): 0, ("d", "net1"): 1, ("d", "net2"): 2, ("d", "eth"): 3}
    assert rx == _values(second, "libvirt_domain_interface_stats_receive_bytes_total")
    for family in first:
        keys = [labels for labels, _ in family.samples]
        assert len(keys) == len(set(keys)), family.name


def test_cdrom_without_medium_is_exported() -> None:
    """A CD-ROM is exported like any disk, with an empty path when it has no medium."""
    families = _all_families(EDGE)
    weird = load_records(EDGE)[0].name
    assert (weird, "sdb") in _values(families, "libvirt_domain_block_stats_read_requests_total")
    assert _values(families, "libvirt_domain_block_stats_info")[(weird, "sdb", "", "")] == 1


def test_backing_chain_layers_get_distinct_devices() -> None:
    """Backing-chain entries sharing a name get `name[backingIndex]`, never a duplicate."""
    stats = {
        "block.count": 2,
        "block.0.name": "vda",
        "block.0.backingIndex": 2,
        "block.0.capacity": 10,
        "block.1.name": "vda",
        "block.1.backingIndex": 1,
        "block.1.capacity": 5,
    }
    families = BlockCollector().collect(_snapshot(DomainRecord("d", "u", stats)))
    capacity = _values(families, "libvirt_domain_block_stats_capacity_bytes")
    assert capacity == {("d", "vda"): 10, ("d", "vda[1]"): 5}


def test_failing_collector_does_not_break_others() -> None:
    """A collector that raises gets success 0 and an error log; the others are unaffected."""

    class Boom:
        name = "boom"

        def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
            raise RuntimeError("kaputt")

    snapshot = make_snapshot(load_records(KVM))
    good = build_collectors(["state", "cpu"])
    with capture_logs() as logs:
        families, outcomes = run_collectors([good[0], Boom(), good[1]], snapshot, clock=lambda: 0.0)
    assert _values(families, "virtmon_collector_success") == {
        ("state",): 1,
        ("boom",): 0,
        ("cpu",): 1,
    }
    assert ("web-01",) in _values(families, "libvirt_domain_info_cpu_time_seconds_total")
    assert ("web-01",) in _values(families, "libvirt_domain_info_state")
    assert [o.success for o in outcomes] == [True, False, True]
    assert logs == [
        {
            "component": "collectors",
            "event": "virtmon.collector.failed",
            "collector": "boom",
            "error": "RuntimeError('kaputt')",
            "exc_info": True,
            "log_level": "error",
        }
    ]
    # The whole output still renders.
    assert b'virtmon_collector_success{collector="boom"} 0' in render_text(families)


def test_a_sample_of_the_wrong_label_width_fails_only_its_collector() -> None:
    """A family holding a sample with more label values than label names costs its collector
    (success 0, its families dropped), and the others still export."""

    class Wide:
        name = "wide"

        def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
            right = MetricFamily("t_right", "gauge", "Test.", ("domain",))
            right.add(("web-01",), 1)
            wrong = MetricFamily("t_wrong", "gauge", "Test.", ("domain",))
            wrong.add(("web-01",), 1)
            wrong.add(("web-01", "extra"), 2)
            return [right, wrong]

    snapshot = make_snapshot(load_records(KVM))
    with capture_logs():
        families, outcomes = run_collectors([Wide(), *build_collectors(["state"])], snapshot)
    assert [o.success for o in outcomes] == [False, True]
    assert "t_wrong" in (outcomes[0].error or "")
    assert not {"t_right", "t_wrong"} & {family.name for family in families}
    assert ("web-01",) in _values(families, "libvirt_domain_info_state")


def test_state_is_one_hot_and_an_unknown_code_marks_no_state() -> None:
    """`libvirt_domain_state` is 1 for the current state only, and all 0 for a code libvirt
    may add later."""
    families, _ = run_collectors(build_collectors(["state"]), _snapshot(
        DomainRecord("paused", "u1", {"state.state": 3}),
        DomainRecord("future", "u2", {"state.state": 42})))
    onehot = _values(families, "libvirt_domain_state")
    assert {state for (domain, state), value in onehot.items() if domain == "paused" and value} \
        == {"paused"}
    assert len([key for key in onehot if key[0] == "paused"]) == 8
    assert [value for (domain, _), value in onehot.items() if domain == "future"] == [0] * 8


def test_missing_input_is_no_data_logged_at_debug() -> None:
    """No node statistics: success 0, outcome no_data, logged at debug and not as an error."""
    snapshot = make_snapshot(load_records(KVM), with_host=False)
    with capture_logs() as logs:
        families, outcomes = run_collectors(
            build_collectors(["node", "host_interfaces"]), snapshot, clock=lambda: 0.0
        )
    assert [(o.name, o.success, o.no_data) for o in outcomes] == [
        ("node", False, True),
        ("host_interfaces", False, True),
    ]
    assert [(log["event"], log["log_level"]) for log in logs] == [
        ("virtmon.collector.no_data", "debug"),
        ("virtmon.collector.no_data", "debug"),
    ]
    assert [f.name for f in families] == [
        "virtmon_collector_success",
        "virtmon_collector_duration_seconds",
    ]


def test_incomplete_marks_domain_skipped_by_nowait() -> None:
    """A running domain lacking requested groups is incomplete; a shut-off one is not."""
    families = DomainInfoCollector().collect(make_snapshot(load_records(EDGE)))
    incomplete = _values(families, "libvirt_domain_stats_incomplete")
    weird = load_records(EDGE)[0].name
    assert incomplete == {(weird,): 0, ("stopped",): 0, ("busy",): 1}
    only_state = DomainInfoCollector().collect(
        make_snapshot(load_records(EDGE), groups=frozenset({"state"}))
    )
    assert set(_values(only_state, "libvirt_domain_stats_incomplete").values()) == {0}


def test_a_driver_other_than_qemu_is_judged_by_state_alone() -> None:
    """On a hypervisor whose driver never fills some groups (libvirt's test driver fills state
    alone) a running domain without them is not incomplete; without state it still is."""
    snapshot = make_snapshot(load_records(EDGE))
    on_test_driver = dataclasses.replace(
        snapshot, libvirt=dataclasses.replace(snapshot.libvirt, hypervisor="TEST"))
    families = DomainInfoCollector().collect(on_test_driver)
    assert set(_values(families, "libvirt_domain_stats_incomplete").values()) == {0}
    stateless = DomainRecord("nostate", "00000000-0000-0000-0000-0000000000aa", {})
    families = DomainInfoCollector().collect(
        dataclasses.replace(on_test_driver, domains=(stateless,)))
    assert _values(families, "libvirt_domain_stats_incomplete") == {("nostate",): 1}


def test_an_inactive_domains_cpu_time_is_not_exported() -> None:
    """libvirt 9.0 gives a shut-off or crashed domain libvirtd's own CPU time in cpu_total: no
    CPU series for it, while a running domain with the same keys has them."""
    keys = {"cpu.time": 210_000_000, "cpu.user": 70_000_000, "cpu.system": 140_000_000}
    records = [DomainRecord(name, f"00000000-0000-0000-0000-00000000000{state}",
                            {"state.state": state, "state.reason": 0, **keys})
               for name, state in (("off", 5), ("crashed", 6), ("on", 1), ("paused", 3))]
    families = CpuCollector().collect(_snapshot(*records))
    for name in ("libvirt_domain_info_cpu_time_seconds_total",
                 "libvirt_domain_cpu_user_seconds_total",
                 "libvirt_domain_cpu_system_seconds_total"):
        assert set(_values(families, name)) == {("on",), ("paused",)}, name
    assert _values(families, "libvirt_domain_info_cpu_time_seconds_total")[("on",)] == 0.21


def test_a_guest_that_never_reported_memory_statistics_has_no_update_time() -> None:
    """balloon.last-update 0 (no balloon driver in the guest) exports no timestamp, not 1970;
    a reported time is exported as it is."""
    records = [DomainRecord(name, f"00000000-0000-0000-0000-00000000000{n}",
                            {"state.state": 1, "balloon.current": 65536,
                             "balloon.last-update": last})
               for n, (name, last) in enumerate((("silent", 0), ("reporting", 1728120434)))]
    families = BalloonCollector().collect(_snapshot(*records))
    assert _values(families, "libvirt_domain_memory_stats_last_update_timestamp_seconds") == {
        ("reporting",): 1728120434}
    assert _values(families, "libvirt_domain_info_memory_usage_bytes")[("silent",)] == (
        65536 * 1024)


def test_vanished_domain_is_absent_next_cycle() -> None:
    """Metrics are built fresh: a domain missing from the next snapshot leaves no series."""
    records = load_records(KVM)
    collectors = build_collectors(DEFAULT_ENABLED)
    before, _ = run_collectors(collectors, make_snapshot(records))
    after, _ = run_collectors(collectors, make_snapshot(records[:1]))
    assert b'domain="db-02"' in render_text(before)
    assert b'domain="db-02"' not in render_text(after)


def _collected(collector: Any, snapshot: StatsSnapshot) -> list[tuple[str, Any, Any]] | str:
    """What ``collector`` returns for ``snapshot``: each family's name, labels and samples (or
    that it has no data)."""
    try:
        return [(f.name, f.label_names, f.samples) for f in collector.collect(snapshot)]
    except NoData:
        return "no data"


def test_a_collector_that_saw_other_cycles_returns_what_a_fresh_one_returns() -> None:
    """Whatever a collector carries from cycle to cycle changes none of its families: cycles
    that add, drop, rename and change domains (state, or reason alone) give what a fresh
    collector gives each of them."""
    records = load_records(KVM)
    first, *others = records
    renamed = first._replace(name="renamed-01")
    paused = first._replace(stats={**first.stats, "state.state": 3})
    reason = first._replace(stats={**first.stats, "state.reason": first.stats["state.reason"] + 1})
    cycles = [records, records[1:], (renamed, *others), (paused, renamed, *others), records,
              (reason, *others),
              (*records, renamed._replace(uuid="00000000-0000-0000-0000-0000000000bb"))]
    names = sorted(COLLECTORS)
    carrying = build_collectors(names)
    for domains in cycles:
        snapshot = make_snapshot(domains)
        for collector, fresh in zip(carrying, build_collectors(names), strict=True):
            assert _collected(collector, snapshot) == _collected(fresh, snapshot), collector.name


def test_help_names_source_and_cycle_and_no_host_label() -> None:
    """Every libvirt_* HELP names its libvirt source and the value's age (the last cycle, or
    every FACTS_EVERY cycles for the host facts the scheduler re-reads that seldom); no series
    has a host label."""
    facts = {"libvirt_node_info", "libvirt_node_cpus", "libvirt_node_memory_bytes",
             "libvirt_node_cpu_frequency_hertz", "libvirt_node_cpu_online",
             "libvirt_host_interface_info", "libvirt_host_interface_active"}
    seen = set()
    for path in (KVM, EDGE):
        for family in _all_families(path):
            assert "host" not in family.label_names, family.name
            if family.name.startswith("virtmon_"):
                continue
            assert "(libvirt " in family.help, family.name
            age = (f"read every {FACTS_EVERY} collection cycles" if family.name in facts
                   else "value from the last collection cycle")
            assert age in family.help, family.name
            seen.add(family.name)
    assert facts <= seen


def test_metric_family_rejects_bad_names() -> None:
    """Counters must end in _total, info metrics in _info, names and labels must be valid."""
    with pytest.raises(ValueError, match="_total"):
        MetricFamily("x_seconds", "counter", "h")
    with pytest.raises(ValueError, match="_info"):
        MetricFamily("x", "info", "h")
    with pytest.raises(ValueError, match="label"):
        MetricFamily("x", "gauge", "h", ("__reserved",))
    with pytest.raises(ValueError, match="metric name"):
        MetricFamily("x-y", "gauge", "h")


def test_a_family_spec_is_checked_where_it_is_declared_and_makes_equal_families() -> None:
    """A spec with a bad name or label fails when it is made, not in a cycle; its families are
    those MetricFamily would make, each with samples of its own, and labels made at run time
    are checked."""
    with pytest.raises(ValueError, match="_total"):
        FamilySpec("x_seconds", "counter", "h")
    with pytest.raises(ValueError, match="label"):
        FamilySpec("x", "gauge", "h", ("__reserved",))
    spec = FamilySpec("x_total", "counter", "h", ("domain",))
    first, second = spec.new(), spec.new()
    assert first == MetricFamily("x_total", "counter", "h", ("domain",))
    first.add(("web",), 1)
    assert second.samples == []
    assert spec.new("device").label_names == ("domain", "device")
    with pytest.raises(ValueError, match="label"):
        spec.new("domain")


def test_vm_collector_maps_types_units_and_booleans() -> None:
    """sum→counter _total, cur→gauge, max→gauge _max, _ns→seconds, booleans→0/1."""
    stats = {
        "vm.remote_tlb_flush.sum": 2,
        "vm.pages_2m.cur": 58,
        "vm.max_mmu_rmap_size.max": 7,
        "vcpu.0.halt_wait_ns.sum": 1_500_000_000,
        "vcpu.0.blocking.cur": True,
        "vcpu.0.time": 5,  # standard key: not the vm collector's
    }
    families = VmCollector().collect(_snapshot(DomainRecord("d", "u", stats)))
    got = {(f.name, f.type): dict(f.samples) for f in families}
    assert got == {
        ("libvirt_domain_hypervisor_remote_tlb_flush_total", "counter"): {("d",): 2},
        ("libvirt_domain_hypervisor_pages_2m", "gauge"): {("d",): 58},
        ("libvirt_domain_hypervisor_max_mmu_rmap_size_max", "gauge"): {("d",): 7},
        ("libvirt_domain_hypervisor_vcpu_halt_wait_seconds_total", "counter"): {("d", "0"): 1.5},
        ("libvirt_domain_hypervisor_vcpu_blocking", "gauge"): {("d", "0"): 1},
    }


def test_metadata_labels_are_sanitised_on_the_info_metric_only() -> None:
    """Metadata keys become valid label names on libvirt_domain_metadata_info, never `domain`."""
    assert metadata_label_name("instance-id") == "instance_id"
    assert metadata_label_name("domain") == "metadata_domain"
    assert metadata_label_name("9lives") == "_9lives"
    assert metadata_label_name("__x") == "meta__x"
    record = DomainRecord("d", "u", {"state.state": 1})
    snapshot = StatsSnapshot(
        0.0,
        frozenset({"state"}),
        (record,),
        {"u": DomainInfo("d", "u", "hvm", True, False, {"domain": "x", "team.name": "ops"})},
    )
    families = DomainInfoCollector().collect(snapshot)
    (meta,) = [f for f in families if f.name == "libvirt_domain_metadata_info"]
    assert meta.label_names == ("domain", "metadata_domain", "team_name")
    assert meta.samples == [(("d", "x", "ops"), 1)]


def test_stats_groups_follow_enabled_collectors() -> None:
    """Only the groups of enabled collectors are requested; vm is opt-in; unknown names fail."""
    assert "vm" not in DEFAULT_ENABLED
    groups = stats_groups_for(DEFAULT_ENABLED)
    assert groups == [g for g in STATS_GROUP_FLAGS if g != "vm"]
    assert stats_groups_for(["vm"]) == ["vcpu", "vm"]
    assert stats_groups_for(["node", "host_interfaces"]) == []
    assert stats_flags_for(["state", "cpu"]) == 1 | 2
    with pytest.raises(ValueError, match="nosuch"):
        stats_groups_for(["nosuch"])


# Each stats group's key prefixes in a getAllDomainStats record (libvirt's documentation of
# virConnectGetAllDomainStats), written here so that a collector's declaration is checked
# against libvirt's grouping, not against itself.
GROUP_KEY_PREFIXES = {
    "state": ("state.",), "cpu_total": ("cpu.",), "balloon": ("balloon.",), "vcpu": ("vcpu.",),
    "interface": ("net.",), "block": ("block.",), "perf": ("perf.",),
    "iothread": ("iothread.",), "memory": ("memory.",), "dirtyrate": ("dirtyrate.",),
    "vm": ("vm.",),
}


@pytest.mark.parametrize("name", sorted(COLLECTORS))
def test_a_collectors_declared_stats_groups_are_all_it_reads(name: str) -> None:
    """Given only the keys of its declared stats groups, a collector exports what it exports
    given every group: its `stats_groups` leave out nothing it reads."""
    declared = COLLECTORS[name].stats_groups
    assert set(declared) <= set(STATS_GROUP_FLAGS)
    prefixes = tuple(p for group in declared for p in GROUP_KEY_PREFIXES[group])
    for fixture in (KVM, EDGE, FIXTURES / "lab_kvm.json", FIXTURES / "lab_variants.json"):
        records = load_records(fixture)
        narrowed = tuple(DomainRecord(r.name, r.uuid, {key: value for key, value in
                                                       r.stats.items() if key.startswith(prefixes)})
                         for r in records)
        whole, _ = run_collectors(build_collectors([name]), make_snapshot(records))
        only_declared, _ = run_collectors(build_collectors([name]),
                                          make_snapshot(narrowed, groups=frozenset(declared)))
        # Durations differ between any two runs; stats_incomplete is about every group asked.
        left_out = {"virtmon_collector_duration_seconds", "libvirt_domain_stats_incomplete"}
        assert (render_text(f for f in only_declared if f.name not in left_out)
                == render_text(f for f in whole if f.name not in left_out)), fixture.name


@pytest.mark.parametrize("name", sorted(COLLECTORS))
def test_a_collector_makes_exactly_the_families_it_declares(name: str) -> None:
    """On every fixture, each family a collector returns is one of its declarations (name, type,
    HELP, labels; a `*` declaration covers the names made at run time), and each declaration
    names a family some fixture gets: docs/metrics.md, written from them, says what it does."""
    collector = COLLECTORS[name]
    declared = {spec.name: spec for spec in collector.families}
    patterns = [spec for spec in collector.families if spec.name.endswith("*")]
    seen: set[str] = set()
    for fixture in FIXTURES.glob("*.json"):
        snapshot = dataclasses.replace(make_snapshot(load_records(fixture)),
                                       admin=AdminStats((ServerStats("libvirtd"),)),
                                       events=EventCounts())
        for family in collector().collect(snapshot):
            spec = declared.get(family.name)
            if spec is None:
                [spec] = [p for p in patterns if family.name.startswith(p.name[:-1])]
                assert family.type in ("counter", "gauge"), family.name
                seen.add(spec.name)
                continue
            seen.add(spec.name)
            assert (family.type, family.help) == (spec.type, spec.help), family.name
            assert family.label_names[:len(spec.labels)] == spec.labels, family.name
            assert spec.labels_note or family.label_names == spec.labels, family.name
    assert sorted(set(declared) - seen) == []


def test_collector_modules_import_no_libvirt() -> None:
    """Collectors are pure: only the package's __init__ imports libvirt (for constants)."""
    package = Path(collectors_pkg.__file__).parent
    for module in package.glob("*.py"):
        if module.name == "__init__.py":
            continue
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "libvirt" for a in node.names), module
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "libvirt", module


def test_series_per_domain_of_the_kvm_fixture() -> None:
    """web-01 (4 vCPUs, 2 disks, 2 NICs) yields a known number of series per default group."""
    snapshot = make_snapshot(load_records(KVM))
    families, _ = run_collectors(build_collectors(DEFAULT_ENABLED), snapshot)
    per_domain = sum(
        1
        for f in families
        if f.label_names[:1] == ("domain",)
        for labels, _ in f.samples
        if labels[0] == "web-01"
    )
    # 40 per domain (39 without metadata labels; the dirty-rate start only once a calculation
    # ran, and web-01's never did) + 4 per vCPU (5 where libvirt reports vcpu.<n>.halted; x86
    # does not) + 12 per disk + 8 per NIC.
    assert per_domain == 40 + 4 * 4 + 2 * 12 + 2 * 8
