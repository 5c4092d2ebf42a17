"""How ``virtmonctl`` shows results to people: tables for lists, units, relative times.

The daemon's documents carry exact numbers (bytes, KiB, nanoseconds, Unix times); ``--json``
prints them as they are. For people a value is shown by what its key says it is: ``*_bytes`` in
KiB/MiB/GiB, ``*_kib`` and ``memory`` likewise, ``*_ns``/``*_ms`` and durations with a unit,
``*_mib``,
times (``*_at``, ``*_since``, ``time``) as ISO 8601 with how long ago; ``-`` for none and for the
id ``-1`` of an inactive domain (as virsh shows it). Lists of objects are tables.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from virtmon.ctl.terminal import paint

TIME_SUFFIXES = ("_at", "_since", "last_success", "time")
BYTE_SUFFIXES = ("_bytes", "bytes")
KIB_SUFFIXES = ("_kib", "memory", "max_mem")
# Keys that hold seconds: the status document's durations and intervals.
SECOND_KEYS = ("interval", "last_duration", "duration", "timeout", "oldest_age", "_seconds",
               "_age")
BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
# Unit suffixes a key loses when its value is shown with a unit of its own.
UNIT_SUFFIXES = ("_kib", "_mib", "_ns", "_ms", "_bytes")
# libvirt's domain event ids (VIR_DOMAIN_EVENT_ID_*, part of its ABI) by the kind virtmon's
# catalog gives each; tests/test_ctl.py checks the table against the catalog.
EVENT_KINDS = (
    "lifecycle", "reboot", "rtc_change", "watchdog", "io_error", "graphics", "io_error_reason",
    "control_error", "block_job", "disk_change", "tray_change", "pmwakeup", "pmsuspend",
    "balloon_change", "pmsuspend_disk", "device_removed", "block_job_2", "tunable",
    "agent_lifecycle", "device_added", "migration_iteration", "job_completed",
    "device_removal_failed", "metadata_change", "block_threshold", "memory_failure",
    "memory_device_size_change",
)


def iso_time(seconds: float) -> str:
    """A Unix time as local ISO 8601 with its UTC offset, to the millisecond."""
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="milliseconds")


def human_bytes(count: float) -> str:
    """``512 B``, ``1.5 KiB``, ``8 MiB``, ``2.3 GiB`` (binary units, as virsh and free -h)."""
    if abs(count) < 1024:
        return f"{count:g} B"
    value = float(count)
    for unit in BINARY_UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == BINARY_UNITS[-1]:
            return f"{value:.1f} {unit}".replace(".0 ", " ")
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    """A duration with its unit: ``850 µs``, ``1.2 ms``, ``15 s``, ``2m 5s``, ``3h 20m``,
    ``2d 4h``."""
    value = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if value == 0:
        return "0 s"
    if value < 1e-3:
        return f"{sign}{value * 1e6:.0f} µs"
    if value < 1:
        return f"{sign}{value * 1e3:.3g} ms"
    if value < 60:
        return f"{sign}{value:.3g} s"
    whole = round(value)
    for size, unit, sub_size, sub_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"),
                                           (60, "m", 1, "s")):
        if whole >= size:
            rest = (whole % size) // sub_size
            return f"{sign}{whole // size}{unit}" + (f" {rest}{sub_unit}" if rest else "")
    raise AssertionError("unreachable")


def ago(seconds: float, now: float | None = None) -> str:
    """A Unix time as how long ago it was (``105s ago``, ``3m ago``) or is to come
    (``in 20s``)."""
    delta = (time.time() if now is None else now) - seconds
    span = abs(delta)
    if span < 120:
        text = f"{span:.0f}s"
    elif span < 7200:
        text = f"{span // 60:.0f}m"
    elif span < 172800:
        text = f"{span // 3600:.0f}h"
    else:
        text = f"{span // 86400:.0f}d"
    return f"{text} ago" if delta >= 0 else f"in {text}"


def label(key: str) -> str:
    """A key as shown beside its value: without a unit suffix the value now carries."""
    for suffix in UNIT_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key.removesuffix(suffix)
    return key


def event_kind(event_id: int) -> str:
    """A domain event id by its kind's name (``event_<id>`` beyond the table)."""
    return EVENT_KINDS[event_id] if 0 <= event_id < len(EVENT_KINDS) else f"event_{event_id}"


def is_time_key(key: str) -> bool:
    """Whether a key holds a Unix time."""
    return key.endswith(TIME_SUFFIXES)


def scalar(key: str, value: Any, *, relative_only: bool = False) -> str:
    """One value as a person reads it, by what its key says it is."""
    if value is None or value == {} or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        if set(value) >= {"name", "value"}:  # a named enum: {"name": "running", "value": 1}
            return str(value["name"])
        return " ".join(f"{k}={scalar(str(k), v)}" for k, v in value.items())
    if isinstance(value, list):
        if key.endswith("event_ids") and all(isinstance(v, int) for v in value):
            return f"{len(value)}: " + ", ".join(event_kind(v) for v in value)
        return ", ".join(scalar(key, v) for v in value)
    if isinstance(value, (int, float)):
        return number(key, value, relative_only=relative_only)
    return str(value)


def number(key: str, value: int | float, *, relative_only: bool = False) -> str:
    """A number by its key: an id, a time, bytes, KiB, nanoseconds, milliseconds, seconds."""
    name = key.rsplit(".", 1)[-1]
    if name == "id" and value == -1:
        return "-"
    if is_time_key(name):
        if value <= 0:
            return "-"
        return ago(float(value)) if relative_only else f"{iso_time(float(value))} " \
                                                       f"({ago(float(value))})"
    if name.endswith(BYTE_SUFFIXES):
        return human_bytes(value)
    if name.endswith(KIB_SUFFIXES):
        return human_bytes(value * 1024)
    if name.endswith("_mib"):
        return human_bytes(value * 1024 * 1024)
    if name.endswith("_ns"):
        return human_seconds(value / 1e9)
    if name.endswith("_ms"):
        return human_seconds(value / 1e3)
    if name.endswith(SECOND_KEYS):
        return human_seconds(float(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def is_table(value: Any) -> bool:
    """Whether a value is a list of objects (shown as a table)."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def flatten(doc: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    """Nested objects as ``(dotted.key, text)`` rows (lists of objects are left to
    :func:`tables_of`)."""
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not set(value) >= {"name", "value"}:
            yield from flatten(value, name + ".")
        elif not is_table(value):
            yield name, scalar(name, value)


def tables_of(doc: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, list[Any]]]:
    """The lists of objects in a document, with their dotted keys."""
    for key, value in doc.items():
        if is_table(value):
            yield f"{prefix}{key}", value
        elif isinstance(value, Mapping):
            yield from tables_of(value, f"{prefix}{key}.")


def key_values(doc: Mapping[str, Any], colour: bool = False) -> list[str]:
    """An object's plain values as aligned ``key  value`` lines (states and severities in
    colour with ``colour``)."""
    rows = [(label(k), v) for k, v in flatten(doc)]
    width = max((len(k) for k, _ in rows), default=0)
    return [f"{k.ljust(width)}  {paint(k, v) if colour else v}" for k, v in rows]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          colour: bool = False) -> list[str]:
    """Rows in columns as wide as their widest cell (the STATE and SEVERITY columns in colour
    with ``colour``; widths count the text, not the colour codes)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    last = len(headers) - 1
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        cells = [c if i == last else c.ljust(widths[i]) for i, c in enumerate(row)]
        if colour:
            cells = [paint(h, c, padded) for h, c, padded in zip(headers, row, cells,
                                                                 strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def object_table(items: Sequence[Mapping[str, Any]], colour: bool = False) -> list[str]:
    """A list of objects as a table: a column per key, in the order they first appear."""
    columns = list(dict.fromkeys(k for item in items for k in item))
    rows = [[scalar(c, item.get(c), relative_only=True) for c in columns] for item in items]
    return table([label(c).upper() for c in columns], rows, colour)


def lines_of(result: Any, done: str = "done", colour: bool = False) -> list[str]:
    """A result for people: a table, ``key  value`` lines (then its tables), or one line."""
    if result is None:
        return [done]
    if isinstance(result, str):
        return [result.rstrip("\n")]
    if is_table(result):
        return object_table(result, colour)
    if isinstance(result, Mapping):
        lines = key_values(result, colour)
        for name, items in tables_of(result):
            if lines:
                lines.append("")
            if len(result) > 1:
                lines.append(f"{name}:")
            lines += object_table(items, colour)
        return lines or ["-"]
    return [scalar("", result)]
