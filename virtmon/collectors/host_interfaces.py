"""Host network interfaces from virConnectListAllInterfaces (cached by the core).

Sample::

    # TYPE libvirt_host_interface_info gauge
    libvirt_host_interface_info{interface="eth0",mac="52:54:00:12:34:56"} 1
    # TYPE libvirt_host_interface_active gauge
    libvirt_host_interface_active{interface="eth0"} 1
"""

from __future__ import annotations

from typing import ClassVar

from virtmon.collectors.base import NoData, help_text
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.exposition.family import FamilySpec, MetricFamily, by_name

FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        "libvirt_host_interface_info", "info",
        help_text("Host interface and its MAC address",
                  "virInterfaceGetName, virInterfaceGetMACString", fact=True),
        labels=("interface", "mac"), unit="info",
        source="virConnectListAllInterfaces, virInterfaceGetMACString; a fact"),
    FamilySpec(
        "libvirt_host_interface_active", "gauge",
        help_text("1 if the host interface is active, else 0", "virInterfaceIsActive", fact=True),
        labels=("interface",), unit="1 or 0",
        source="virConnectListAllInterfaces active/inactive (the udev backend: operstate up); a "
               "fact"),
)
_FAMILY = by_name(FAMILIES)


class HostInterfacesCollector:
    """Each host interface's MAC address and whether it is active."""

    name = "host_interfaces"
    stats_groups: ClassVar[tuple[str, ...]] = ()
    families: ClassVar[tuple[FamilySpec, ...]] = FAMILIES

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Two families; `NoData` when the interface list was not taken (driver lacks it)."""
        if snapshot.host_interfaces is None:
            raise NoData("no host interface list in this snapshot")
        info = _FAMILY["libvirt_host_interface_info"].new()
        active = _FAMILY["libvirt_host_interface_active"].new()
        for iface in snapshot.host_interfaces:
            info.add((iface.name, iface.mac), 1)
            active.add((iface.name,), 1 if iface.active else 0)
        return [info, active]
