"""libvirt's flag and enum constants as names: discovered from the binding by prefix.

``flags("VIR_DOMAIN_AFFECT_")`` gives ``{"current": 0, "live": 1, "config": 2}``; ``named(...)``
turns a number back into ``{"name": ..., "value": ...}`` for a result. Discovering the names from
the installed binding keeps them in step with the libvirt actually in use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import libvirt

from virtmon.virt.states import STATE_NAMES


@cache
def _constants(prefix: str) -> tuple[tuple[str, int], ...]:
    return tuple(
        (name[len(prefix):].lower(), int(value))
        for name, value in vars(libvirt).items()
        if name.startswith(prefix) and isinstance(value, int) and not name.endswith("_LAST")
    )


def flags(prefix: str, *, only: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict[str, int]:
    """Constant names under ``prefix`` (lower case, prefix removed) -> values."""
    wanted, unwanted = set(only), tuple(exclude)
    return {
        name: value for name, value in _constants(prefix)
        if (not wanted or name in wanted) and not (unwanted and name.startswith(unwanted))
    }


def merged(*tables: Mapping[str, int]) -> dict[str, int]:
    """Several flag tables as one (functions that accept flags of more than one enum)."""
    out: dict[str, int] = {}
    for table in tables:
        out.update(table)
    return out


AFFECT = flags("VIR_DOMAIN_AFFECT_")
AFFECT_VCPU = merged(AFFECT, flags("VIR_DOMAIN_VCPU_", only=("maximum", "guest", "hotpluggable")))
AFFECT_MEM = merged(AFFECT, flags("VIR_DOMAIN_MEM_", only=("maximum",)))
DEVICE_MODIFY = merged(AFFECT, flags("VIR_DOMAIN_DEVICE_MODIFY_", only=("force",)))

STATES = flags("VIR_DOMAIN_", only=STATE_NAMES)
# The reason enum that goes with each state.
REASON_PREFIX = {name: f"VIR_DOMAIN_{name.upper()}_" for name in STATE_NAMES}
SHUTDOWN_REASONS = ("unknown", "user")


def named(table: Mapping[str, int], value: int) -> dict[str, Any]:
    """An enum value with its name (``unknown`` when this libvirt does not name it)."""
    for name, number in table.items():
        if number == value:
            return {"name": name, "value": value}
    return {"name": "unknown", "value": value}


def state_and_reason(state: int, reason: int) -> dict[str, Any]:
    """A domain's state and the reason for it, both named."""
    state_named = named(STATES, state)
    prefix = REASON_PREFIX.get(state_named["name"])
    reasons = flags(prefix) if prefix else {}
    if state_named["name"] == "shutdown":
        reasons = {k: v for k, v in reasons.items() if k in SHUTDOWN_REASONS}
    return {"state": state_named, "reason": named(reasons, reason)}


def error_name(code: int) -> str:
    """``VIR_ERR_*`` name of a libvirt error code."""
    for name, value in vars(libvirt).items():
        if name.startswith("VIR_ERR_") and value == code and not name.startswith(
                ("VIR_ERR_NONE", "VIR_ERR_WARNING", "VIR_ERR_ERROR")):
            return str(name)
    return "VIR_ERR_UNKNOWN" if code else "VIR_ERR_OK"
