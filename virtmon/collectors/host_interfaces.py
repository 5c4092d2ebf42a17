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
from virtmon.exposition.family import MetricFamily


class HostInterfacesCollector:
    """Each host interface's MAC address and whether it is active."""

    name = "host_interfaces"
    stats_groups: ClassVar[tuple[str, ...]] = ()

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        """Two families; `NoData` when the interface list was not taken (driver lacks it)."""
        if snapshot.host_interfaces is None:
            raise NoData("no host interface list in this snapshot")
        info = MetricFamily(
            "libvirt_host_interface_info",
            "info",
            help_text(
                "Host interface and its MAC address",
                "virInterfaceGetName, virInterfaceGetMACString",
                fact=True,
            ),
            ("interface", "mac"),
        )
        active = MetricFamily(
            "libvirt_host_interface_active",
            "gauge",
            help_text("1 if the host interface is active, else 0", "virInterfaceIsActive",
                      fact=True),
            ("interface",),
        )
        for iface in snapshot.host_interfaces:
            info.add((iface.name, iface.mac), 1)
            active.add((iface.name,), 1 if iface.active else 0)
        return [info, active]
