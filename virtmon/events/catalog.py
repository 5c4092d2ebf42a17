"""The catalog of libvirt domain events: every event id, its kind name and its decoder.

This and :mod:`virtmon.events.decode` are the only modules of ``virtmon.events`` that
import libvirt, and only for its constants: ids and enum values are discovered from the
imported module, so an id that libvirt-python knows but this catalog does not still
decodes (generically, as ``event_<id>``), and the daemon can register every id the
running libvirt accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import libvirt

from virtmon.events import decode as _d

# The enum tables live with the decoders; re-exported so callers (reconciliation building
# synthetic lifecycle events, alert rules) need only this module.
from virtmon.events.decode import (
    AGENT_LIFECYCLE_REASONS,
    AGENT_LIFECYCLE_STATES,
    BLOCK_JOB_STATUSES,
    BLOCK_JOB_TYPES,
    DISK_CHANGE_REASONS,
    GRAPHICS_ADDRESS_FAMILIES,
    GRAPHICS_PHASES,
    IO_ERROR_ACTIONS,
    JOB_OPERATIONS,
    LIFECYCLE_DETAILS,
    LIFECYCLE_EVENTS,
    MEMORY_FAILURE_ACTIONS,
    MEMORY_FAILURE_FLAGS,
    MEMORY_FAILURE_RECIPIENTS,
    METADATA_TYPES,
    TRAY_CHANGE_REASONS,
    WATCHDOG_ACTIONS,
)
from virtmon.events.model import VIRTMON_KINDS

__all__ = [
    "AGENT_LIFECYCLE_REASONS",
    "AGENT_LIFECYCLE_STATES",
    "BLOCK_JOB_STATUSES",
    "BLOCK_JOB_TYPES",
    "CATALOG",
    "DISK_CHANGE_REASONS",
    "GRAPHICS_ADDRESS_FAMILIES",
    "GRAPHICS_PHASES",
    "IO_ERROR_ACTIONS",
    "JOB_OPERATIONS",
    "LIFECYCLE_DETAILS",
    "LIFECYCLE_EVENTS",
    "MEMORY_FAILURE_ACTIONS",
    "MEMORY_FAILURE_FLAGS",
    "MEMORY_FAILURE_RECIPIENTS",
    "METADATA_TYPES",
    "SPECS_BY_CONSTANT",
    "TRAY_CHANGE_REASONS",
    "WATCHDOG_ACTIONS",
    "DecodedEvent",
    "EventSpec",
    "decode",
    "domain_event_ids",
    "kind_name",
    "known_kind",
]

_ID_PREFIX = "VIR_DOMAIN_EVENT_ID_"


@dataclass(frozen=True, slots=True)
class DecodedEvent:
    """One domain event's payload with enum values named; the payload is JSON-safe."""

    kind: str
    name: str
    detail: str | None
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EventSpec:
    """How one event id is named and decoded.

    ``signature`` mirrors the argument format libvirt-python's C glue uses to call the
    dispatcher, one letter per argument between ``dom`` and ``opaque``: ``i`` int,
    ``L`` long long, ``K`` unsigned long long, ``s`` string or None, ``a`` graphics
    address dict, ``l`` graphics subject list of (type, name), ``p`` typed-parameter dict.
    Its length is the number of arguments the decoder expects.
    """

    kind: str
    signature: str
    decoder: _d.Decoder

    @property
    def arity(self) -> int:
        """Number of callback arguments between ``dom`` and ``opaque``."""
        return len(self.signature)


# Keyed by the constant's suffix rather than its number, so the numbers come from libvirt
# and an id this libvirt-python lacks (NIC_MAC_CHANGE before 11.2) simply drops out.
SPECS_BY_CONSTANT: Mapping[str, EventSpec] = {
    "LIFECYCLE": EventSpec("lifecycle", "ii", _d.decode_lifecycle),
    "REBOOT": EventSpec("reboot", "", _d.decode_no_args),
    "RTC_CHANGE": EventSpec("rtc_change", "L", _d.decode_rtc_change),
    "WATCHDOG": EventSpec("watchdog", "i", _d.decode_watchdog),
    "IO_ERROR": EventSpec("io_error", "ssi", _d.decode_io_error),
    "GRAPHICS": EventSpec("graphics", "iaasl", _d.decode_graphics),
    "IO_ERROR_REASON": EventSpec("io_error_reason", "ssis", _d.decode_io_error_reason),
    "CONTROL_ERROR": EventSpec("control_error", "", _d.decode_no_args),
    "BLOCK_JOB": EventSpec("block_job", "sii", _d.decode_block_job),
    "DISK_CHANGE": EventSpec("disk_change", "sssi", _d.decode_disk_change),
    "TRAY_CHANGE": EventSpec("tray_change", "si", _d.decode_tray_change),
    "PMWAKEUP": EventSpec("pmwakeup", "i", _d.decode_pm),
    "PMSUSPEND": EventSpec("pmsuspend", "i", _d.decode_pm),
    "BALLOON_CHANGE": EventSpec("balloon_change", "L", _d.decode_balloon_change),
    "PMSUSPEND_DISK": EventSpec("pmsuspend_disk", "i", _d.decode_pm),
    "DEVICE_REMOVED": EventSpec("device_removed", "s", _d.decode_device),
    "BLOCK_JOB_2": EventSpec("block_job_2", "sii", _d.decode_block_job),
    "TUNABLE": EventSpec("tunable", "p", _d.decode_tunable),
    "AGENT_LIFECYCLE": EventSpec("agent_lifecycle", "ii", _d.decode_agent_lifecycle),
    "DEVICE_ADDED": EventSpec("device_added", "s", _d.decode_device),
    "MIGRATION_ITERATION": EventSpec("migration_iteration", "i", _d.decode_migration_iteration),
    "JOB_COMPLETED": EventSpec("job_completed", "p", _d.decode_job_completed),
    "DEVICE_REMOVAL_FAILED": EventSpec("device_removal_failed", "s", _d.decode_device),
    "METADATA_CHANGE": EventSpec("metadata_change", "is", _d.decode_metadata_change),
    "BLOCK_THRESHOLD": EventSpec("block_threshold", "ssKK", _d.decode_block_threshold),
    "MEMORY_FAILURE": EventSpec("memory_failure", "iii", _d.decode_memory_failure),
    "MEMORY_DEVICE_SIZE_CHANGE": EventSpec(
        "memory_device_size_change", "sK", _d.decode_memory_device_size_change
    ),
    "NIC_MAC_CHANGE": EventSpec("nic_mac_change", "sss", _d.decode_nic_mac_change),
    "VCPU_REMOVED": EventSpec("vcpu_removed", "i", _d.decode_vcpu_removed),
}


def _id_constants() -> dict[str, int]:
    """Every ``VIR_DOMAIN_EVENT_ID_*`` integer constant of the imported libvirt, by suffix."""
    found: dict[str, int] = {}
    for attr in dir(libvirt):
        if attr.startswith(_ID_PREFIX) and not attr.endswith("_LAST"):
            value = getattr(libvirt, attr)
            if isinstance(value, int) and not isinstance(value, bool):
                found[attr[len(_ID_PREFIX) :]] = value
    return found


_ID_CONSTANTS = _id_constants()

CATALOG: Mapping[int, EventSpec] = {
    number: SPECS_BY_CONSTANT[suffix]
    for suffix, number in _ID_CONSTANTS.items()
    if suffix in SPECS_BY_CONSTANT
}


_KINDS = frozenset(spec.kind for spec in SPECS_BY_CONSTANT.values())


def domain_event_ids() -> tuple[int, ...]:
    """Every domain event id the imported libvirt module defines, sorted."""
    return tuple(sorted(set(_ID_CONSTANTS.values())))


def kind_name(event_id: int) -> str:
    """The snake_case kind of an event id; ``event_<id>`` for one the catalog lacks."""
    spec = CATALOG.get(event_id) if isinstance(event_id, int) else None
    return spec.kind if spec is not None else f"event_{event_id}"


_GENERIC_KIND = re.compile(r"event_[0-9]{1,6}")


def known_kind(kind: str) -> bool:
    """Whether events of ``kind`` can exist: a kind of this catalog or of virtmon itself, or the
    generic ``event_<id>`` of an id the catalog lacks (journaled by this libvirt or another)."""
    return (kind in _KINDS or kind in VIRTMON_KINDS
            or _GENERIC_KIND.fullmatch(kind) is not None)


def _generic(kind: str, args: tuple[Any, ...], **extra: Any) -> DecodedEvent:
    """An event decoded without knowing its shape: the raw arguments, made JSON-safe."""
    payload: dict[str, Any] = {"args": _d.json_safe(list(args))}
    payload |= extra
    return DecodedEvent(kind=kind, name=kind, detail=None, payload=payload)


def decode(event_id: int, args: tuple[Any, ...]) -> DecodedEvent:
    """Decode the callback arguments (between ``dom`` and ``opaque``) of one event.

    Never raises for arguments of the right arity; an unknown id, a wrong arity or a
    decoder failure still yields an event, decoded generically, so nothing is dropped.
    """
    kind = kind_name(event_id)
    spec = CATALOG.get(event_id) if isinstance(event_id, int) else None
    if spec is None:
        return _generic(kind, args)
    if len(args) != spec.arity:
        return _generic(kind, args, expected_arity=spec.arity)
    try:
        name, detail, payload = spec.decoder(args)
    except Exception as exc:  # a decoder bug must not lose the event (rule 3)
        return _generic(kind, args, decode_error=_d.json_safe(f"{type(exc).__name__}: {exc}"))
    return DecodedEvent(kind=kind, name=name or kind, detail=detail, payload=payload)
