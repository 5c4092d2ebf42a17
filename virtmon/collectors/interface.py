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
from virtmon.exposition.family import MetricFamily

# (key suffix, metric, description)
_SPECS: tuple[tuple[str, str, str], ...] = (
    ("rx.bytes", "libvirt_domain_interface_stats_receive_bytes_total", "Bytes received"),
    ("rx.pkts", "libvirt_domain_interface_stats_receive_packets_total", "Packets received"),
    ("rx.errs", "libvirt_domain_interface_stats_receive_errors_total", "Receive errors"),
    ("rx.drop", "libvirt_domain_interface_stats_receive_drops_total", "Received packets dropped"),
    ("tx.bytes", "libvirt_domain_interface_stats_transmit_bytes_total", "Bytes transmitted"),
    ("tx.pkts", "libvirt_domain_interface_stats_transmit_packets_total", "Packets transmitted"),
    ("tx.errs", "libvirt_domain_interface_stats_transmit_errors_total", "Transmit errors"),
    (
        "tx.drop",
        "libvirt_domain_interface_stats_transmit_drops_total",
        "Transmitted packets dropped",
    ),
)


@cache
def _keys(index: int) -> tuple[str, tuple[str, ...]]:
    """`net.<n>.name` and the counter keys of one index, built once per index."""
    prefix = f"net.{index}."
    return prefix + "name", tuple(prefix + suffix for suffix, _, _ in _SPECS)


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


class InterfaceCollector:
    """Receive/transmit bytes, packets, errors and drops per domain interface."""

    name = "interface"
    stats_groups: ClassVar[tuple[str, ...]] = ("interface",)

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Eight counters per interface, labelled `domain` and `target_device`."""
        families = [
            MetricFamily(
                metric,
                "counter",
                help_text(f"{what} on the interface", f"net.<n>.{suffix}"),
                ("domain", "target_device"),
            )
            for suffix, metric, what in _SPECS
        ]
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
