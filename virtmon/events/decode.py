"""Payload decoders for libvirt domain events: enum values to names, everything JSON-safe.

Each decoder takes the positional arguments that libvirt-python passes to a
``domainEventRegisterAny`` callback between ``dom`` and ``opaque`` and returns a
:class:`Decoded` triple. The enum tables are read from the libvirt module's constants at
import time, so values that a newer libvirt adds are named without a code change; a value
no table knows keeps its number (``unknown_<n>``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import libvirt

# Containers nested deeper than this are cut: libvirt never nests beyond two levels, so
# anything deeper is junk and must not cost unbounded recursion in a callback.
_MAX_DEPTH = 16
_MAX_REPR = 1000


class Decoded(NamedTuple):
    """What a decoder returns: the event's name, its detail, and the JSON-safe payload."""

    name: str | None  # None means "the event's kind"
    detail: str | None
    payload: dict[str, Any]


Decoder = Callable[[tuple[Any, ...]], Decoded]


def enum_table(prefix: str, *, single_word: bool = False, strip: str = "") -> dict[int, str]:
    """Map each integer ``libvirt`` constant named ``prefix*`` to its lower-case suffix.

    ``single_word`` keeps only suffixes without an underscore, for families whose prefix
    is shared with other families (``VIR_DOMAIN_BLOCK_JOB_READY`` vs ``..._TYPE_COPY``).
    ``strip`` removes a leading part of the suffix where libvirt's naming is uneven.
    """
    table: dict[int, str] = {}
    for attr in sorted(dir(libvirt)):
        if not attr.startswith(prefix) or attr.endswith("_LAST"):
            continue
        suffix = attr[len(prefix) :]
        if not suffix or (single_word and "_" in suffix):
            continue
        value = getattr(libvirt, attr)
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if strip and suffix.startswith(strip):
            suffix = suffix[len(strip) :]
        # First name wins for aliases, so the table is stable across dir() orderings.
        table.setdefault(value, suffix.lower())
    return table


LIFECYCLE_EVENTS = enum_table("VIR_DOMAIN_EVENT_", single_word=True)
# Detail names depend on the event: STOPPED detail 1 is "destroyed", STARTED detail 1 is
# "migrated". libvirt names each detail family after its event, which lets us find them.
LIFECYCLE_DETAILS: dict[int, dict[int, str]] = {
    code: enum_table(f"VIR_DOMAIN_EVENT_{name.upper()}_") for code, name in LIFECYCLE_EVENTS.items()
}
WATCHDOG_ACTIONS = enum_table("VIR_DOMAIN_EVENT_WATCHDOG_")
IO_ERROR_ACTIONS = enum_table("VIR_DOMAIN_EVENT_IO_ERROR_")
GRAPHICS_PHASES = enum_table("VIR_DOMAIN_EVENT_GRAPHICS_", single_word=True)
GRAPHICS_ADDRESS_FAMILIES = enum_table("VIR_DOMAIN_EVENT_GRAPHICS_ADDRESS_")
BLOCK_JOB_TYPES = enum_table("VIR_DOMAIN_BLOCK_JOB_TYPE_")
BLOCK_JOB_STATUSES = enum_table("VIR_DOMAIN_BLOCK_JOB_", single_word=True)
# libvirt spells these ..._DISK_CHANGE_MISSING_ON_START and ..._DISK_DROP_MISSING_ON_START.
DISK_CHANGE_REASONS = enum_table("VIR_DOMAIN_EVENT_DISK_", strip="CHANGE_")
TRAY_CHANGE_REASONS = enum_table("VIR_DOMAIN_EVENT_TRAY_CHANGE_")
AGENT_LIFECYCLE_STATES = enum_table("VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_")
AGENT_LIFECYCLE_REASONS = enum_table("VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_")
METADATA_TYPES = enum_table("VIR_DOMAIN_METADATA_")
MEMORY_FAILURE_RECIPIENTS = enum_table("VIR_DOMAIN_EVENT_MEMORY_FAILURE_RECIPIENT_")
MEMORY_FAILURE_ACTIONS = enum_table("VIR_DOMAIN_EVENT_MEMORY_FAILURE_ACTION_")
MEMORY_FAILURE_FLAGS = enum_table("VIR_DOMAIN_MEMORY_FAILURE_")
JOB_OPERATIONS = enum_table("VIR_DOMAIN_JOB_OPERATION_")

_BAD_SURROGATE = re.compile("[\ud800-\udfff]")


def _safe_repr(value: object) -> str:
    """repr() that cannot raise and cannot grow without bound."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break decoding
        text = f"<{type(value).__name__}>"
    return _safe_str(text[:_MAX_REPR])


def _safe_str(text: str) -> str:
    """Replace lone surrogates so the text encodes as UTF-8 (journal, HTTP stream)."""
    text = str.__str__(text)  # drop str subclasses and their overrides
    if _BAD_SURROGATE.search(text) is None:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_safe(value: Any, _depth: int = 0) -> Any:
    """Turn anything libvirt (or a bug) hands us into str/int/float/bool/None/list/dict."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        # NaN and infinities are not JSON; strict consumers of the stream would reject them.
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _safe_str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    if _depth >= _MAX_DEPTH:
        return _safe_repr(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            safe_key = json_safe(key, _depth + 1)
            name = safe_key if isinstance(safe_key, str) else _safe_repr(safe_key)
            out[name] = json_safe(item, _depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item, _depth + 1) for item in value]
    return _safe_repr(value)


def enum_value(table: Mapping[int, str], value: Any) -> tuple[str, Any]:
    """Return (name, code) for an enum value; unknown numbers keep their number."""
    if isinstance(value, int) and not isinstance(value, bool):
        code = int(value)
        return table.get(code, f"unknown_{code}"), code
    # Not an integer at all: libvirt never does this, but the callback must not die on it.
    return "invalid", json_safe(value)


def _enum_fields(key: str, table: Mapping[int, str], value: Any) -> dict[str, Any]:
    """``{key: name, key_code: number}``, the payload shape of every enum value."""
    name, code = enum_value(table, value)
    return {key: name, f"{key}_code": code}


def flag_names(table: Mapping[int, str], value: Any) -> list[str]:
    """Names of the bits set in a flags word; unknown bits are named by their value."""
    if not isinstance(value, int) or isinstance(value, bool):
        return ["invalid"]
    # C passes flags as int; a negative one is a high bit seen through a signed type.
    bits = int(value) & 0xFFFFFFFFFFFFFFFF
    names: list[str] = []
    while bits:
        low = bits & -bits
        names.append(table.get(low, f"unknown_{low}"))
        bits ^= low
    return names


# --- one decoder per event shape -----------------------------------------------------------
# Argument order follows libvirt-python's _dispatchDomainEvent*Callback methods.


def decode_lifecycle(args: tuple[Any, ...]) -> Decoded:
    """(event, detail): the detail's names depend on the event."""
    event, detail = args
    payload = _enum_fields("event", LIFECYCLE_EVENTS, event)
    event_code = payload["event_code"]
    # An invalid event code may be unhashable (a list), so only look up integers.
    details = LIFECYCLE_DETAILS.get(event_code, {}) if isinstance(event_code, int) else {}
    payload |= _enum_fields("detail", details, detail)
    return Decoded(payload["event"], payload["detail"], payload)


def decode_no_args(args: tuple[Any, ...]) -> Decoded:
    """Events that carry nothing but the domain (reboot, control error)."""
    return Decoded(None, None, {})


def decode_rtc_change(args: tuple[Any, ...]) -> Decoded:
    """(utcoffset): the guest RTC's new offset from UTC, in seconds."""
    return Decoded(None, None, {"utc_offset": json_safe(args[0])})


def decode_watchdog(args: tuple[Any, ...]) -> Decoded:
    """(action): what the watchdog did."""
    payload = _enum_fields("action", WATCHDOG_ACTIONS, args[0])
    return Decoded(payload["action"], None, payload)


def decode_io_error(args: tuple[Any, ...]) -> Decoded:
    """(srcPath, devAlias, action)."""
    src_path, dev_alias, action = args
    payload = {"src_path": json_safe(src_path), "dev_alias": json_safe(dev_alias)}
    payload |= _enum_fields("action", IO_ERROR_ACTIONS, action)
    return Decoded(None, payload["action"], payload)


def decode_io_error_reason(args: tuple[Any, ...]) -> Decoded:
    """(srcPath, devAlias, action, reason): reason is a string such as "enospc"."""
    decoded = decode_io_error(args[:3])
    decoded.payload["reason"] = json_safe(args[3])
    return decoded


def _graphics_address(address: Any) -> Any:
    """{family, node, service} with the family named."""
    if not isinstance(address, Mapping):
        return json_safe(address)
    out: dict[str, Any] = json_safe(address)
    if "family" in address:
        out |= _enum_fields("family", GRAPHICS_ADDRESS_FAMILIES, address["family"])
    return out


def _graphics_identity(identity: Any) -> Any:
    """A (type, name) subject pair as {"type": ..., "name": ...}."""
    if isinstance(identity, tuple | list) and len(identity) == 2:
        return {"type": json_safe(identity[0]), "name": json_safe(identity[1])}
    return json_safe(identity)


def decode_graphics(args: tuple[Any, ...]) -> Decoded:
    """(phase, localAddr, remoteAddr, authScheme, subject)."""
    phase, local, remote, auth_scheme, subject = args
    payload = _enum_fields("phase", GRAPHICS_PHASES, phase)
    payload["local"] = _graphics_address(local)
    payload["remote"] = _graphics_address(remote)
    payload["auth_scheme"] = json_safe(auth_scheme)
    if isinstance(subject, list | tuple):
        payload["subject"] = [_graphics_identity(identity) for identity in subject]
    else:
        payload["subject"] = json_safe(subject)
    return Decoded(payload["phase"], None, payload)


def decode_block_job(args: tuple[Any, ...]) -> Decoded:
    """(disk, type, status): disk is a path for BLOCK_JOB, a target name for BLOCK_JOB_2."""
    disk, job_type, status = args
    payload = {"disk": json_safe(disk)}
    payload |= _enum_fields("type", BLOCK_JOB_TYPES, job_type)
    payload |= _enum_fields("status", BLOCK_JOB_STATUSES, status)
    return Decoded(payload["status"], payload["type"], payload)


def decode_disk_change(args: tuple[Any, ...]) -> Decoded:
    """(oldSrcPath, newSrcPath, devAlias, reason); either path may be None."""
    old_src, new_src, dev_alias, reason = args
    payload = {
        "old_src_path": json_safe(old_src),
        "new_src_path": json_safe(new_src),
        "dev_alias": json_safe(dev_alias),
    }
    payload |= _enum_fields("reason", DISK_CHANGE_REASONS, reason)
    return Decoded(payload["reason"], None, payload)


def decode_tray_change(args: tuple[Any, ...]) -> Decoded:
    """(devAlias, reason)."""
    payload = {"dev_alias": json_safe(args[0])}
    payload |= _enum_fields("reason", TRAY_CHANGE_REASONS, args[1])
    return Decoded(payload["reason"], None, payload)


def decode_pm(args: tuple[Any, ...]) -> Decoded:
    """(reason): reserved by libvirt, always 0 today, so it stays a number."""
    return Decoded(None, None, {"reason": json_safe(args[0])})


def decode_balloon_change(args: tuple[Any, ...]) -> Decoded:
    """(actual): the balloon's new size in KiB."""
    return Decoded(None, None, {"actual_kib": json_safe(args[0])})


def decode_device(args: tuple[Any, ...]) -> Decoded:
    """(devAlias): device added, removed or whose removal failed."""
    return Decoded(None, None, {"dev_alias": json_safe(args[0])})


def decode_tunable(args: tuple[Any, ...]) -> Decoded:
    """(params): the changed typed parameters, e.g. {"cputune.cpu_shares": 2048}."""
    return Decoded(None, None, {"params": json_safe(args[0])})


def decode_agent_lifecycle(args: tuple[Any, ...]) -> Decoded:
    """(state, reason)."""
    payload = _enum_fields("state", AGENT_LIFECYCLE_STATES, args[0])
    payload |= _enum_fields("reason", AGENT_LIFECYCLE_REASONS, args[1])
    return Decoded(payload["state"], payload["reason"], payload)


def decode_migration_iteration(args: tuple[Any, ...]) -> Decoded:
    """(iteration): the migration pass that just started."""
    return Decoded(None, None, {"iteration": json_safe(args[0])})


def decode_job_completed(args: tuple[Any, ...]) -> Decoded:
    """(params): the completed job's statistics; the operation, when given, is named."""
    params = args[0]
    payload: dict[str, Any] = {"params": json_safe(params)}
    detail = None
    if isinstance(params, Mapping) and "operation" in params:
        payload |= _enum_fields("operation", JOB_OPERATIONS, params["operation"])
        detail = payload["operation"]
    return Decoded(None, detail, payload)


def decode_metadata_change(args: tuple[Any, ...]) -> Decoded:
    """(mtype, nsuri): nsuri is only set for element metadata."""
    payload = _enum_fields("type", METADATA_TYPES, args[0])
    payload["namespace"] = json_safe(args[1])
    return Decoded(payload["type"], None, payload)


def decode_block_threshold(args: tuple[Any, ...]) -> Decoded:
    """(dev, path, threshold, excess): threshold and excess in bytes."""
    dev, path, threshold, excess = args
    return Decoded(
        None,
        None,
        {
            "dev": json_safe(dev),
            "path": json_safe(path),
            "threshold": json_safe(threshold),
            "excess": json_safe(excess),
        },
    )


def decode_memory_failure(args: tuple[Any, ...]) -> Decoded:
    """(recipient, action, flags)."""
    recipient, action, flags = args
    payload = _enum_fields("recipient", MEMORY_FAILURE_RECIPIENTS, recipient)
    payload |= _enum_fields("action", MEMORY_FAILURE_ACTIONS, action)
    payload["flags"] = flag_names(MEMORY_FAILURE_FLAGS, flags)
    payload["flags_code"] = json_safe(flags)
    return Decoded(payload["action"], payload["recipient"], payload)


def decode_memory_device_size_change(args: tuple[Any, ...]) -> Decoded:
    """(alias, size): the memory device's new size in KiB."""
    return Decoded(None, None, {"alias": json_safe(args[0]), "size_kib": json_safe(args[1])})


def decode_nic_mac_change(args: tuple[Any, ...]) -> Decoded:
    """(alias, oldMAC, newMAC): libvirt 11.2 and later."""
    alias, old_mac, new_mac = args
    return Decoded(
        None,
        None,
        {"alias": json_safe(alias), "old_mac": json_safe(old_mac), "new_mac": json_safe(new_mac)},
    )


def decode_vcpu_removed(args: tuple[Any, ...]) -> Decoded:
    """(vcpuid): the vCPU that was unplugged."""
    return Decoded(None, None, {"vcpu_id": json_safe(args[0])})
