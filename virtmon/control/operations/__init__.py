"""The operation table: every libvirt call the control API offers, one row each.

:data:`OPERATIONS` (name -> :class:`~virtmon.control.operations.model.Operation`) drives the
routes, argument validation, roles and the OpenAPI document. :data:`EXCLUDED` names the functions
of libvirt's domain, host, interface and admin API that are deliberately not operations, each with
its reason; together they account for every function libvirt's own API description lists
(``libvirt-api.xml`` and ``libvirt-admin-api.xml``, installed by ``libvirt-dev``;
tests/control/test_operations.py checks it) and produce the coverage table in
docs/control-api.md (``python -m virtmon.control.operations``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from virtmon.control.operations import (
    admin,
    alerts,
    domain_read,
    domain_write,
    host,
    interface,
)
from virtmon.control.operations.model import Operation
from virtmon.control.operations.streams import STREAMED

__all__ = ["EXCLUDED", "OPERATIONS", "REASONS", "coverage_table", "function_map",
           "libvirt_api_functions"]

# Where libvirt-dev installs libvirt's machine-readable API description.
API_DIR = Path("/usr/share/libvirt/api")
# The parts of libvirt-api.xml the control API covers (its ``file`` attribute); every function of
# libvirt-admin-api.xml is covered too.
COVERED_FILES = ("libvirt-domain", "libvirt-host", "libvirt-interface")


def _table(*parts: Iterable[Operation]) -> dict[str, Operation]:
    table: dict[str, Operation] = {}
    for part in parts:
        for operation in part:
            assert operation.name not in table, f"duplicate operation {operation.name}"
            table[operation.name] = operation
    return table


OPERATIONS: dict[str, Operation] = _table(
    domain_read.OPERATIONS, domain_write.OPERATIONS, host.OPERATIONS, interface.OPERATIONS,
    admin.OPERATIONS, alerts.OPERATIONS,
)

REASONS = {
    "refcount": "reference counting and freeing: the daemon owns every object's lifetime; "
                "results are copied into JSON and nothing crosses the socket by reference",
    "callback": "callback and event registration: the daemon registers for every event "
                "itself; subscribe to GET /v1/events instead",
    "fd": "file-descriptor passing (graphics sockets, files handed to a domain): the "
          "descriptor itself would have to cross the control socket (SCM_RIGHTS), which HTTP "
          "cannot carry; there is no libvirt stream to bridge",
    "connection": "opening, closing and tuning connections: the daemon owns its connections "
                  "(the monitoring one, the write one, the helper's admin one)",
    "callback_type": "a callback's C type, not a function that can be called",
}



def _each(reason: str, functions: str) -> dict[str, str]:
    return dict.fromkeys(functions.split(), reason)


EXCLUDED: dict[str, str] = {
    **_each("refcount", (
        "virAdmClientFree virAdmConnectRef virAdmServerFree virConnectRef virDomainFree "
        "virDomainRef virDomainStatsRecordListFree virInterfaceFree virInterfaceRef "
        "virStorageInterfaceFree virDomainGetConnect virInterfaceGetConnect"
    )),
    **_each("callback", (
        "virAdmConnectRegisterCloseCallback virAdmConnectUnregisterCloseCallback "
        "virConnectRegisterCloseCallback virConnectUnregisterCloseCallback "
        "virConnectDomainEventRegister virConnectDomainEventDeregister "
        "virConnectDomainEventRegisterAny virConnectDomainEventDeregisterAny "
        "virEventRegisterImpl virEventRegisterDefaultImpl virSetErrorFunc"
    )),
    **_each("fd", (
        "virDomainOpenGraphics "
        "virDomainOpenGraphicsFD virDomainCreateWithFiles virDomainCreateXMLWithFiles "
        "virDomainFDAssociate"
    )),
    **_each("connection", (
        "virAdmConnectOpen virAdmConnectClose virAdmInitialize virConnectOpen "
        "virConnectOpenAuth virConnectOpenReadOnly virConnectClose virInitialize "
        "virConnectSetKeepAlive virConnectSetIdentity"
    )),
    **_each("callback_type", (
        "virAdmConnectCloseFunc virConnectCloseFunc virConnectAuthCallbackPtr"
    )),
}


def _is_callback_type(function: str) -> bool:
    return function.startswith("virConnectDomainEvent") and function.endswith("Callback")


def _role(name: str) -> str:
    return (OPERATIONS[name] if name in OPERATIONS else STREAMED[name][0]).role


def function_map() -> dict[str, list[str]]:
    """C function -> the operations that cover it (the streamed ones too: console, channel)."""
    out: dict[str, list[str]] = {}
    for operation in (*OPERATIONS.values(), *(row for row, _route in STREAMED.values())):
        for function in operation.functions:
            out.setdefault(function, []).append(operation.name)
    return out


def coverage_table(functions: Iterable[str]) -> list[str]:
    """Markdown rows: each function, its operation(s) or the reason it is left out."""
    mapped = function_map()
    rows = ["| function | operation | role |", "|---|---|---|"]
    for function in sorted(set(functions)):
        if function in mapped:
            ops = mapped[function]
            roles = sorted({_role(o) for o in ops})
            rows.append(f"| `{function}` | {', '.join(_shown(o) for o in ops)} | "
                        f"{', '.join(roles)} |")
        elif function in EXCLUDED or _is_callback_type(function):
            reason = EXCLUDED.get(function, "callback_type")
            rows.append(f"| `{function}` | left out: {reason} | - |")
        else:
            rows.append(f"| `{function}` | **not covered** | - |")
    return rows


def _shown(name: str) -> str:
    """An operation as the coverage table names it: a streamed one with its route."""
    if name in STREAMED:
        return f"`{name}` (`GET {STREAMED[name][1]}`, WebSocket)"
    return f"`{name}`"


def libvirt_api_functions(api_dir: Path = API_DIR) -> set[str]:
    """Every function and callback type of the covered files, as libvirt's installed API
    description lists them; FileNotFoundError names what to install when it is missing."""
    found: set[str] = set()
    for name, files in (("libvirt-api.xml", COVERED_FILES), ("libvirt-admin-api.xml", None)):
        path = api_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: libvirt-dev installs it")
        for element in ET.parse(path).getroot().iter():
            if element.tag not in ("function", "functype"):
                continue
            if files is None or element.get("file") in files:
                found.add(element.get("name", ""))
    return found


def coverage_functions(api_dir: Path = API_DIR) -> set[str]:
    """The coverage table's functions: libvirt's, plus any an operation or a reason names
    (snapshots and checkpoints live in other files; some functions are newer than 9.0)."""
    return libvirt_api_functions(api_dir) | set(function_map()) | set(EXCLUDED)


def excluded_reason(function: str) -> str | None:
    """Why a function is not an operation (None: it is one, or unknown)."""
    if function in EXCLUDED:
        return EXCLUDED[function]
    return "callback_type" if _is_callback_type(function) else None

