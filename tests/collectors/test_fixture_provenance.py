"""The collector fixtures and goldens answer to libvirt, not to the collectors.

Golden files are the collectors' own output, so a unit error regenerated into them would pass
their comparison. Two checks that do not come from the collectors: the golden file of a fixture
recorded on the lab holds the values libvirt's documented units give (conversions written here,
from libvirt's documentation of virConnectGetAllDomainStats), and every key of the hand-written
fixture is one the lab's recordings carry with the same type, or one the lab cannot record
(reason given).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

from .snapshots import FIXTURES, GOLDEN

RECORDED = ("lab_kvm.json", "lab_variants.json")
HAND_WRITTEN = "kvm_running.json"
NS, KIB = 1e-9, 1024  # libvirt: times in nanoseconds, balloon sizes in KiB, the rest in bytes
# libvirt stats key of lab-0 -> (series in the golden file, its labels, factor to base units)
CONVERSIONS: dict[str, tuple[str, dict[str, str], float]] = {
    "cpu.time": ("libvirt_domain_info_cpu_time_seconds_total", {}, NS),
    "cpu.user": ("libvirt_domain_cpu_user_seconds_total", {}, NS),
    "vcpu.0.time": ("libvirt_domain_vcpu_time_seconds_total", {"vcpu": "0"}, NS),
    "balloon.current": ("libvirt_domain_memory_stats_current_balloon_bytes", {}, KIB),
    "balloon.maximum": ("libvirt_domain_memory_stats_maximum_bytes", {}, KIB),
    "block.0.capacity": ("libvirt_domain_block_stats_capacity_bytes", {}, 1),
    "block.0.rd.bytes": ("libvirt_domain_block_stats_read_bytes_total", {}, 1),
    "block.0.rd.times": ("libvirt_domain_block_stats_read_time_seconds_total", {}, NS),
    "net.0.rx.bytes": ("libvirt_domain_interface_stats_receive_bytes_total", {}, 1),
}
# Keys of the hand-written fixture the lab's no-OS KVM domains cannot produce.
NOT_RECORDABLE = {
    **{f"balloon.{key}": "guest memory statistics need a balloon driver in a guest OS"
       for key in ("available", "disk_caches", "hugetlb_pgalloc", "hugetlb_pgfail",
                   "major_fault", "minor_fault", "swap_in", "swap_out", "unused", "usable")},
    "cpu.cache.monitor.": "cache monitors need resctrl (Intel RDT), absent here",
    "memory.bandwidth.monitor.": "memory bandwidth monitors need resctrl (Intel MBA)",
    "perf.": "perf events need a PMU for the hardware ones (the software ones are not recorded)",
    "iothread.": "the recorded domains have no IOThread (not yet recorded: a gap)",
    "dirtyrate.": "no dirty-rate calculation ran while recording (not yet recorded: a gap)",
}


def records(name: str) -> list[dict[str, Any]]:
    """The domain records of one fixture file."""
    loaded: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return loaded


def generic(key: str) -> str:
    """A stats key with its indices made generic (``block.0.rd.bytes`` -> ``block.N.rd.bytes``)."""
    return re.sub(r"\.\d+(?=\.|$)", ".N", key)


def golden_samples(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a golden file by name and labels."""
    samples = {}
    for family in parse_text(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


@pytest.mark.parametrize("key", sorted(CONVERSIONS))
def test_a_recorded_golden_holds_libvirts_value_in_base_units(key: str) -> None:
    """lab-0's recorded value, converted here from libvirt's documented unit, is what the golden
    file says (a unit changed in a collector and regenerated into the golden fails this)."""
    [lab0] = [r for r in records("lab_kvm.json") if r["name"] == "lab-0"]
    series, labels, factor = CONVERSIONS[key]
    wanted = frozenset({"domain": "lab-0", **labels}.items())
    found = {labels_: value for (name, labels_), value in
             golden_samples(GOLDEN / "lab_kvm.prom").items()
             if name == series and wanted <= labels_}
    assert len(found) == 1, (series, found)
    [value] = found.values()
    assert value == pytest.approx(lab0["stats"][key] * factor, rel=1e-12)


def test_the_hand_written_fixture_uses_recorded_keys_of_the_same_type() -> None:
    """Each key of the hand-written fixture is one a lab recording has, with the same value type,
    or one the lab cannot record (named with its reason): no invented key or unit."""
    recorded: dict[str, type] = {}
    for name in RECORDED:
        for record in records(name):
            for key, value in record["stats"].items():
                recorded.setdefault(generic(key), type(value))
    unknown, mistyped = set(), set()
    for record in records(HAND_WRITTEN):
        for key, value in record["stats"].items():
            if any(key.startswith(prefix) for prefix in NOT_RECORDABLE):
                continue
            if generic(key) not in recorded:
                unknown.add(key)
            elif not isinstance(value, recorded[generic(key)]):
                mistyped.add((key, type(value).__name__, recorded[generic(key)].__name__))
    assert unknown == set() and mistyped == set()
