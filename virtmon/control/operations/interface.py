"""Host interface operations (libvirt-interface): list, look up, XML, define, start, transactions.

Interfaces are addressed by name or MAC address. Defining, starting and the change transaction
(begin/commit/rollback) change the host's network configuration: they need the ``admin`` role.
"""

from __future__ import annotations

from typing import Any

from virtmon.control.operations import names
from virtmon.control.operations.model import Operation, done, flags_param, need, op

IFACE = "interface"
H = "host"


def describe(iface: Any) -> dict[str, Any]:
    """Name, MAC address and whether it is up."""
    return {"name": iface.name(), "mac": iface.MACString(), "active": bool(iface.isActive())}


def listing(conn: Any, a: dict[str, Any]) -> dict[str, Any]:
    """virConnectListAllInterfaces with each interface described."""
    found = [describe(i) for i in conn.listAllInterfaces(a["flags"])]
    return {"count": len(found), "interfaces": found}


OPERATIONS: list[Operation] = [
    op("interface.list", H, "read", "Host interfaces: name, MAC, active",
       "virConnectListAllInterfaces virConnectListInterfaces virConnectListDefinedInterfaces "
       "virConnectNumOfInterfaces virConnectNumOfDefinedInterfaces", listing,
       flags_param(names.flags("VIR_CONNECT_LIST_INTERFACES_"))),
    op("interface.lookup", IFACE, "read", "One interface's name, MAC and state",
       "virInterfaceLookupByName virInterfaceLookupByMACString virInterfaceGetName "
       "virInterfaceGetMACString", lambda i, a: describe(i)),
    op("interface.xml", IFACE, "read", "The interface's XML description",
       "virInterfaceGetXMLDesc", lambda i, a: i.XMLDesc(a["flags"]),
       flags_param(names.flags("VIR_INTERFACE_XML_"))),
    op("interface.is_active", IFACE, "read", "Whether the interface is up",
       "virInterfaceIsActive",
       lambda i, a: bool(i.isActive())),
    op("interface.define", H, "admin", "Define (or redefine) an interface from its XML",
       "virInterfaceDefineXML", lambda c, a: describe(c.interfaceDefineXML(a["xml"], a["flags"])),
       need("xml", "xml"), flags_param(names.flags("VIR_INTERFACE_DEFINE_"))),
    op("interface.undefine", IFACE, "admin", "Remove an interface's definition",
       "virInterfaceUndefine", lambda i, a: done(i.undefine())),
    op("interface.create", IFACE, "admin", "Bring an interface up", "virInterfaceCreate",
       lambda i, a: done(i.create(0))),
    op("interface.destroy", IFACE, "admin", "Bring an interface down", "virInterfaceDestroy",
       lambda i, a: done(i.destroy(0))),
    op("interface.change_begin", H, "admin", "Snapshot the network configuration",
       "virInterfaceChangeBegin", lambda c, a: done(c.changeBegin(0))),
    op("interface.change_commit", H, "admin", "Keep the changes since change_begin",
       "virInterfaceChangeCommit", lambda c, a: done(c.changeCommit(0))),
    op("interface.change_rollback", H, "admin", "Undo the changes since change_begin",
       "virInterfaceChangeRollback", lambda c, a: done(c.changeRollback(0))),
]
