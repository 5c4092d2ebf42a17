"""Hypervisor-specific statistics (KVM's binary stats) as `libvirt_domain_hypervisor_*`. Opt-in.

Sources: `vm.<name>.<type>` (group `vm`) and `vcpu.<n>.<name>.<type>` (group `vcpu`). libvirt
makes no stability promise for these names, and they cost about 16 series per domain plus about
47 per vCPU, hence opt-in. Mapping: `sum` becomes a counter `<name>_total`, `cur` a gauge
`<name>`, `max` a gauge `<name>_max`; booleans become 0/1; a name ending in `_ns` is converted
to seconds and renamed `_seconds`. Other characters than [a-zA-Z0-9_] become `_`.

Sample::

    # TYPE libvirt_domain_hypervisor_remote_tlb_flush_total counter
    libvirt_domain_hypervisor_remote_tlb_flush_total{domain="web-01"} 2
    # TYPE libvirt_domain_hypervisor_pages_2m gauge
    libvirt_domain_hypervisor_pages_2m{domain="web-01"} 58
    # TYPE libvirt_domain_hypervisor_vcpu_halt_wait_seconds_total counter
    libvirt_domain_hypervisor_vcpu_halt_wait_seconds_total{domain="web-01",vcpu="0"} 7021.710117997
    # TYPE libvirt_domain_hypervisor_vcpu_blocking gauge
    libvirt_domain_hypervisor_vcpu_blocking{domain="web-01",vcpu="0"} 1
"""

from __future__ import annotations

import re
from functools import cache
from typing import ClassVar

from virtmon.collectors.base import help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, MetricType

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_TYPES = frozenset(("cur", "sum", "max"))


@cache
def _metric(scope: str, stat: str, kind: str) -> tuple[str, MetricType, float]:
    """Metric name, type and divisor for one hypervisor stat (`scope` is "" or "vcpu_")."""
    base = _INVALID.sub("_", stat)
    scale = 1.0
    if base.endswith("_ns"):
        base = base[:-3] + "_seconds"
        scale = 1e9
    name = f"libvirt_domain_hypervisor_{scope}{base}"
    if kind == "sum":
        return name + "_total", "counter", scale
    if kind == "max":
        return name + "_max", "gauge", scale
    return name, "gauge", scale


# One declaration for every family: their names are QEMU's, known only when it states them.
FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_hypervisor_*", "untyped",
        help_text("Hypervisor statistic <name> (<type>)", "vm.<name>.<type>"),
        labels=("domain",), labels_note="and vcpu for per-vCPU ones",
        type_note="counter for `sum`, gauge for `cur` and `max`",
        unit="as QEMU states it; names ending in `_ns` become `_seconds`",
        source="`vm.<name>.<type>`, `vcpu.<n>.<name>.<type>`: `sum` becomes `<name>_total`, "
               "`max` `<name>_max`, `cur` `<name>`; names are QEMU's (KVM: about 16 per domain "
               "and 47 per vCPU) and carry no stability promise"),
)


class VmCollector:
    """Every `vm.*` and per-vCPU `vcpu.<n>.<name>.<type>` hypervisor statistic."""

    name = "vm"
    stats_groups: ClassVar[tuple[str, ...]] = ("vm", "vcpu")
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """One family per distinct hypervisor statistic seen in any domain."""
        families: dict[str, tuple[float, MetricFamily]] = {}

        def family_for(scope: str, stat: str, kind: str, source: str) -> tuple[float, MetricFamily]:
            name, mtype, scale = _metric(scope, stat, kind)
            entry = families.get(name)
            if entry is None:
                labels = ("domain", "vcpu") if scope else ("domain",)
                what = f"Hypervisor statistic {stat} ({kind})"
                if scale != 1.0:
                    what += ", in seconds"
                entry = families[name] = (
                    scale,
                    MetricFamily(name, mtype, help_text(what, source), labels),
                )
            return entry

        for record in snapshot.domains:
            domain = record.name
            for key, value in record.stats.items():
                if key.startswith("vm."):
                    parts = key.split(".")
                    if len(parts) != 3 or parts[2] not in _TYPES:
                        continue
                    scale, family = family_for("", parts[1], parts[2], f"vm.{parts[1]}.{parts[2]}")
                    labels: tuple[str, ...] = (domain,)
                elif key.startswith("vcpu."):
                    parts = key.split(".")
                    if len(parts) != 4 or parts[3] not in _TYPES:
                        continue
                    scale, family = family_for(
                        "vcpu_", parts[2], parts[3], f"vcpu.<n>.{parts[2]}.{parts[3]}"
                    )
                    labels = (domain, parts[1])
                else:
                    continue
                if type(value) is bool:
                    family.add(labels, 1 if value else 0)
                elif scale != 1.0:
                    family.add(labels, value / scale)
                else:
                    family.add(labels, value)
        return [families[name][1] for name in sorted(families)]
