"""Domain network interface counters from the `interface` group (`net.<n>.*`).

`target_device` is `net.<n>.name`. An interface without a name (SR-IOV hostdev, some
`type='user'` setups) or with a name already used in the same domain gets the stable synthetic
name `net<n>` (its index in the record), so there is never a duplicate series.

Sample::

    # TYPE libvirt_domain_interface_stats_receive_bytes_total counter
    libvirt_domain_interface_stats_receive_bytes_total{domain="web-01",target_device="vnet12"} 194
    libvirt_domain_interface_stats_receive_bytes_total{domain="web-01",target_device="net1"} 0
    # TYPE libvirt_domain_interface_stats_transmit_drops_total counter
    libvirt_domain_interface_stats_transmit_drops_total{domain="web-01",target_device="vnet12"} 0
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, ClassVar

from virtmon.collectors.base import claim_unique, help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

# (key suffix, metric); HELP, unit and source are in FAMILIES
_SPECS: tuple[tuple[str, str], ...] = (
    ("rx.bytes", "libvirt_domain_interface_stats_receive_bytes_total"),
    ("rx.pkts", "libvirt_domain_interface_stats_receive_packets_total"),
    ("rx.errs", "libvirt_domain_interface_stats_receive_errors_total"),
    ("rx.drop", "libvirt_domain_interface_stats_receive_drops_total"),
    ("tx.bytes", "libvirt_domain_interface_stats_transmit_bytes_total"),
    ("tx.pkts", "libvirt_domain_interface_stats_transmit_packets_total"),
    ("tx.errs", "libvirt_domain_interface_stats_transmit_errors_total"),
    ("tx.drop", "libvirt_domain_interface_stats_transmit_drops_total"),
)


@cache
def _keys(index: int) -> tuple[str, tuple[str, ...]]:
    """`net.<n>.name` and the counter keys of one index, built once per index."""
    prefix = f"net.{index}."
    return prefix + "name", tuple(prefix + suffix for suffix, _ in _SPECS)


def interface_names(stats: Mapping[str, Any], count: int) -> list[str]:
    """The `target_device` of each of `count` interfaces: unique, never empty, stable."""
    get = stats.get
    names: list[str] = []
    used: set[str] = set()
    for index in range(count):
        name = get(_keys(index)[0]) or ""
        if not name or name in used:
            name = f"net{index}"  # stable: by position; claim_unique if a real NIC has it
        names.append(claim_unique(used, name))
    return names


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_domain_interface_stats_receive_bytes_total", "counter",
        help_text("Bytes received on the interface", "net.<n>.rx.bytes"),
        labels=("domain", "target_device"), unit="bytes",
        source="`net.<n>.rx.bytes`"),
    FamilySpec(
        "libvirt_domain_interface_stats_receive_packets_total", "counter",
        help_text("Packets received on the interface", "net.<n>.rx.pkts"),
        labels=("domain", "target_device"), unit="packets",
        source="`net.<n>.rx.pkts`"),
    FamilySpec(
        "libvirt_domain_interface_stats_receive_errors_total", "counter",
        help_text("Receive errors on the interface", "net.<n>.rx.errs"),
        labels=("domain", "target_device"), unit="errors",
        source="`net.<n>.rx.errs`"),
    FamilySpec(
        "libvirt_domain_interface_stats_receive_drops_total", "counter",
        help_text("Received packets dropped on the interface", "net.<n>.rx.drop"),
        labels=("domain", "target_device"), unit="packets",
        source="`net.<n>.rx.drop`"),
    FamilySpec(
        "libvirt_domain_interface_stats_transmit_bytes_total", "counter",
        help_text("Bytes transmitted on the interface", "net.<n>.tx.bytes"),
        labels=("domain", "target_device"), unit="bytes",
        source="`net.<n>.tx.bytes`"),
    FamilySpec(
        "libvirt_domain_interface_stats_transmit_packets_total", "counter",
        help_text("Packets transmitted on the interface", "net.<n>.tx.pkts"),
        labels=("domain", "target_device"), unit="packets",
        source="`net.<n>.tx.pkts`"),
    FamilySpec(
        "libvirt_domain_interface_stats_transmit_errors_total", "counter",
        help_text("Transmit errors on the interface", "net.<n>.tx.errs"),
        labels=("domain", "target_device"), unit="errors",
        source="`net.<n>.tx.errs`"),
    FamilySpec(
        "libvirt_domain_interface_stats_transmit_drops_total", "counter",
        help_text("Transmitted packets dropped on the interface", "net.<n>.tx.drop"),
        labels=("domain", "target_device"), unit="packets",
        source="`net.<n>.tx.drop`"),
)
_FAMILY = by_name(FAMILIES)


class InterfaceCollector:
    """Receive/transmit bytes, packets, errors and drops per domain interface."""

    name = "interface"
    stats_groups: ClassVar[tuple[str, ...]] = ("interface",)
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Eight counters per interface, labelled `domain` and `target_device`."""
        families = [_FAMILY[metric].new() for _suffix, metric in _SPECS]
        for record in snapshot.domains:
            stats = record.stats
            count = stats.get("net.count")
            if not count:
                continue
            domain = record.name
            for index, device in enumerate(interface_names(stats, count)):
                labels = (domain, device)
                for key, family in zip(_keys(index)[1], families, strict=True):
                    value = stats.get(key)
                    if value is not None:
                        family.add(labels, value)
        return families
