"""Virtual CPUs from the `vcpu` group (times in nanoseconds converted to seconds).

The per-vCPU array may be sparse (hotplug), so every index below `vcpu.maximum` is probed.
The hypervisor-specific `vcpu.<n>.<name>.<type>` keys belong to the opt-in `vm` collector.

Sample::

    # TYPE libvirt_domain_info_virtual_cpus gauge
    libvirt_domain_info_virtual_cpus{domain="web-01"} 2
    # TYPE libvirt_domain_vcpu_maximum gauge
    libvirt_domain_vcpu_maximum{domain="web-01"} 2
    # TYPE libvirt_domain_vcpu_state gauge
    libvirt_domain_vcpu_state{domain="web-01",vcpu="0"} 1
    # TYPE libvirt_domain_vcpu_time_seconds_total counter
    libvirt_domain_vcpu_time_seconds_total{domain="web-01",vcpu="0"} 115.94
    # TYPE libvirt_domain_vcpu_delay_seconds_total counter
    libvirt_domain_vcpu_delay_seconds_total{domain="web-01",vcpu="0"} 34.399069382
"""

from __future__ import annotations

from functools import cache
from typing import ClassVar

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name


@cache
def _keys(index: int) -> tuple[str, str, str, str, str, str]:
    """The per-vCPU keys and the `vcpu` label value for one index (built once per index)."""
    prefix = f"vcpu.{index}."
    return (
        str(index),
        prefix + "state",
        prefix + "time",
        prefix + "wait",
        prefix + "delay",
        prefix + "halted",
    )


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_info_virtual_cpus", "gauge",
        help_text("Number of online virtual CPUs", "vcpu.current"),
        labels=("domain",), unit="vCPUs",
        source="`vcpu.current`"),
    FamilySpec(
        "libvirt_domain_vcpu_current", "gauge",
        help_text("Number of online virtual CPUs", "vcpu.current"),
        labels=("domain",), unit="vCPUs",
        source="`vcpu.current`"),
    FamilySpec(
        "libvirt_domain_vcpu_maximum", "gauge",
        help_text("Maximum number of virtual CPUs", "vcpu.maximum"),
        labels=("domain",), unit="vCPUs",
        source="`vcpu.maximum`"),
    FamilySpec(
        "libvirt_domain_vcpu_state", "gauge",
        help_text("vCPU state as a virVcpuState code (0 offline, 1 running, 2 blocked)",
                  "vcpu.<n>.state"),
        labels=("domain", "vcpu"), unit="virVcpuState code",
        source="`vcpu.<n>.state`"),
    FamilySpec(
        "libvirt_domain_vcpu_time_seconds_total", "counter",
        help_text("CPU time used by the vCPU, in seconds", "vcpu.<n>.time"),
        labels=("domain", "vcpu"), unit="seconds",
        source="`vcpu.<n>.time` (ns)"),
    FamilySpec(
        "libvirt_domain_vcpu_wait_seconds_total", "counter",
        help_text("Time the vCPU wanted to run while the host ran something else, in seconds",
                  "vcpu.<n>.wait"),
        labels=("domain", "vcpu"), unit="seconds",
        source="`vcpu.<n>.wait` (ns)"),
    FamilySpec(
        "libvirt_domain_vcpu_delay_seconds_total", "counter",
        help_text("Time the vCPU thread waited in the host run queue (guest steal time), in "
                  "seconds", "vcpu.<n>.delay"),
        labels=("domain", "vcpu"), unit="seconds",
        source="`vcpu.<n>.delay` (ns): steal time"),
    FamilySpec(
        "libvirt_domain_vcpu_halted", "gauge",
        help_text("1 if the vCPU is halted, else 0", "vcpu.<n>.halted"),
        labels=("domain", "vcpu"), unit="1 or 0",
        source="`vcpu.<n>.halted` (not reported on x86 KVM by libvirt 9.0)"),
)
_FAMILY = by_name(FAMILIES)


class VcpuCollector:
    """vCPU counts, and per vCPU its state, halted flag and time/wait/delay counters."""

    name = "vcpu"
    stats_groups: ClassVar[tuple[str, ...]] = ("vcpu",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Families for `vcpu.current`, `vcpu.maximum` and `vcpu.<n>.*`."""
        virtual = _FAMILY["libvirt_domain_info_virtual_cpus"].new()
        current = _FAMILY["libvirt_domain_vcpu_current"].new()
        maximum = _FAMILY["libvirt_domain_vcpu_maximum"].new()
        state = _FAMILY["libvirt_domain_vcpu_state"].new()
        time = _FAMILY["libvirt_domain_vcpu_time_seconds_total"].new()
        wait = _FAMILY["libvirt_domain_vcpu_wait_seconds_total"].new()
        delay = _FAMILY["libvirt_domain_vcpu_delay_seconds_total"].new()
        halted = _FAMILY["libvirt_domain_vcpu_halted"].new()
        for record in snapshot.domains:
            stats = record.stats
            domain = record.name
            count = stats.get("vcpu.current")
            if count is not None:
                virtual.add((domain,), count)
                current.add((domain,), count)
            top = stats.get("vcpu.maximum")
            if top is not None:
                maximum.add((domain,), top)
            else:
                top = count or 0
            for index in range(top):
                label, k_state, k_time, k_wait, k_delay, k_halted = _keys(index)
                labels = (domain, label)
                value = stats.get(k_state)
                if value is not None:
                    state.add(labels, value)
                value = stats.get(k_time)
                if value is not None:
                    time.add(labels, value / 1e9)
                value = stats.get(k_wait)
                if value is not None:
                    wait.add(labels, value / 1e9)
                value = stats.get(k_delay)
                if value is not None:
                    delay.add(labels, value / 1e9)
                value = stats.get(k_halted)
                if value is not None:
                    halted.add(labels, 1 if value else 0)
        return [virtual, current, maximum, state, time, wait, delay, halted]
