"""Tests of the domain-event decode catalog: recorded payloads for every id, enum naming,
forward compatibility (unknown ids and values) and robustness against odd input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import libvirt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtmon.events import catalog
from virtmon.events.catalog import DecodedEvent, decode, domain_event_ids, kind_name
from virtmon.events.decode import LIFECYCLE_EVENTS, json_safe

PAYLOADS = Path(__file__).parent / "payloads" / "domain_events.json"
# No example database: tests must not leave a .hypothesis directory in the checkout.
# No per-example deadline: on a loaded machine one slow example is not a failure.
QUICK = settings(database=None, max_examples=300, deadline=None)


def _tuple_hook(obj: dict[str, Any]) -> Any:
    """JSON has no tuples; the fixture writes {"__tuple__": [...]} where libvirt gives one."""
    return tuple(obj["__tuple__"]) if set(obj) == {"__tuple__"} else obj


def _recordings() -> list[dict[str, Any]]:
    """Every recorded payload of the fixture file."""
    data: dict[str, Any] = json.loads(PAYLOADS.read_text(), object_hook=_tuple_hook)
    events: list[dict[str, Any]] = data["events"]
    return events


def _event_id(constant: str) -> int | None:
    """The number of VIR_DOMAIN_EVENT_ID_<constant> in this libvirt, None if it lacks it."""
    value = getattr(libvirt, f"VIR_DOMAIN_EVENT_ID_{constant}", None)
    return value if isinstance(value, int) else None


RECORDINGS = _recordings()


@pytest.mark.parametrize("rec", RECORDINGS, ids=[f"{r['id']}-{r['case']}" for r in RECORDINGS])
def test_recorded_payload_decodes_to_the_expected_event(rec: dict[str, Any]) -> None:
    """Each recorded argument tuple decodes to its expected kind, name, detail and payload."""
    spec = catalog.SPECS_BY_CONSTANT[rec["id"]]
    args = tuple(rec["args"])
    expect = rec["expect"]
    event_id = _event_id(rec["id"])
    if event_id is None:
        # Newer ids (NIC_MAC_CHANGE...) are absent from an older libvirt-python: check the
        # decoder itself so the spec is ready when the constant appears.
        name, detail, payload = spec.decoder(args)
        decoded = DecodedEvent(spec.kind, name or spec.kind, detail, payload)
    else:
        decoded = decode(event_id, args)
    assert decoded == DecodedEvent(spec.kind, expect["name"], expect["detail"], expect["payload"])
    assert json.loads(json.dumps(decoded.payload, allow_nan=False)) == decoded.payload


def test_every_event_id_has_a_spec_and_a_recorded_payload() -> None:
    """Every id the imported libvirt defines is in the catalog and has a recording."""
    recorded = {_event_id(rec["id"]) for rec in RECORDINGS}
    for event_id in domain_event_ids():
        assert event_id in catalog.CATALOG, event_id
        assert event_id in recorded, kind_name(event_id)


def test_recordings_use_the_arity_of_their_spec() -> None:
    """A recording has exactly as many arguments as libvirt-python passes for its id."""
    for rec in RECORDINGS:
        assert len(rec["args"]) == catalog.SPECS_BY_CONSTANT[rec["id"]].arity, rec["case"]


def test_domain_event_ids_are_discovered_from_libvirt() -> None:
    """domain_event_ids() lists every VIR_DOMAIN_EVENT_ID_* constant, sorted, without _LAST."""
    expected = sorted(
        {
            getattr(libvirt, attr)
            for attr in dir(libvirt)
            if attr.startswith("VIR_DOMAIN_EVENT_ID_") and not attr.endswith("_LAST")
        }
    )
    assert list(domain_event_ids()) == expected
    # libvirt 9.0 defines ids 0..26; later versions only add.
    assert set(range(27)) <= set(expected)


@pytest.mark.parametrize(
    ("constant", "kind"),
    [("LIFECYCLE", "lifecycle"), ("RTC_CHANGE", "rtc_change"), ("BLOCK_JOB_2", "block_job_2"),
     ("MEMORY_DEVICE_SIZE_CHANGE", "memory_device_size_change")],
)
def test_kind_name_is_the_snake_case_constant(constant: str, kind: str) -> None:
    """kind_name() gives the snake_case kind of a known id."""
    event_id = _event_id(constant)
    assert event_id is not None
    assert kind_name(event_id) == kind


def test_every_kind_matches_its_constant_name() -> None:
    """Each spec's kind is its constant's suffix in lower case, so names never drift."""
    for constant, spec in catalog.SPECS_BY_CONSTANT.items():
        assert spec.kind == constant.lower()


@pytest.mark.parametrize(
    ("event", "detail", "event_name", "detail_name"),
    [
        ("STOPPED", "DESTROYED", "stopped", "destroyed"),
        ("STARTED", "BOOTED", "started", "booted"),
        ("SUSPENDED", "IOERROR", "suspended", "ioerror"),
        ("STARTED", "MIGRATED", "started", "migrated"),
        ("RESUMED", "UNPAUSED", "resumed", "unpaused"),
        ("SHUTDOWN", "GUEST", "shutdown", "guest"),
        ("PMSUSPENDED", "DISK", "pmsuspended", "disk"),
        ("CRASHED", "PANICKED", "crashed", "panicked"),
        ("DEFINED", "RENAMED", "defined", "renamed"),
        ("UNDEFINED", "REMOVED", "undefined", "removed"),
    ],
)
def test_lifecycle_detail_names_come_from_their_event_enum(
    event: str, detail: str, event_name: str, detail_name: str
) -> None:
    """The same detail number is named after the enum of its own lifecycle event."""
    event_code = getattr(libvirt, f"VIR_DOMAIN_EVENT_{event}")
    detail_code = getattr(libvirt, f"VIR_DOMAIN_EVENT_{event}_{detail}")
    decoded = decode(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, (event_code, detail_code))
    assert (decoded.name, decoded.detail) == (event_name, detail_name)
    assert decoded.payload == {
        "event": event_name, "event_code": event_code,
        "detail": detail_name, "detail_code": detail_code,
    }


def test_every_lifecycle_detail_constant_is_named() -> None:
    """Every VIR_DOMAIN_EVENT_<EVENT>_<DETAIL> constant decodes to <detail> under <event>."""
    seen = 0
    for event_code, event_name in LIFECYCLE_EVENTS.items():
        prefix = f"VIR_DOMAIN_EVENT_{event_name.upper()}_"
        for attr in dir(libvirt):
            if attr.startswith(prefix):
                code = getattr(libvirt, attr)
                decoded = decode(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, (event_code, code))
                assert decoded.detail == attr[len(prefix):].lower()
                seen += 1
    assert seen >= 39  # libvirt 9.0 has 39 detail constants; later versions only add


def test_unknown_enum_values_keep_their_number() -> None:
    """Values no table knows (a newer libvirt) decode as unknown_<n> with the number kept."""
    lifecycle = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
    assert decode(lifecycle, (5, 99)).payload == {
        "event": "stopped", "event_code": 5, "detail": "unknown_99", "detail_code": 99,
    }
    unknown_event = decode(lifecycle, (42, 0))
    assert (unknown_event.name, unknown_event.detail) == ("unknown_42", "unknown_0")
    watchdog = decode(libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG, (77,))
    assert watchdog.name == "unknown_77"
    assert watchdog.payload == {"action": "unknown_77", "action_code": 77}
    block_job = decode(libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, ("vda", 12, 9))
    assert (block_job.name, block_job.detail) == ("unknown_9", "unknown_12")
    graphics = decode(
        libvirt.VIR_DOMAIN_EVENT_ID_GRAPHICS,
        (7, {"family": 5, "node": "x", "service": "1"}, {}, None, []),
    )
    assert graphics.payload["phase_code"] == 7
    assert graphics.payload["local"]["family"] == "unknown_5"
    memory = decode(libvirt.VIR_DOMAIN_EVENT_ID_MEMORY_FAILURE, (1, 9, 1 | 8))
    assert memory.payload["flags"] == ["action_required", "unknown_8"]
    assert memory.payload["flags_code"] == 9
    assert memory.name == "unknown_9"


def test_non_integer_enum_value_is_named_invalid() -> None:
    """An enum slot holding a non-integer decodes as "invalid" with the value kept."""
    decoded = decode(libvirt.VIR_DOMAIN_EVENT_ID_TRAY_CHANGE, ("ide0-0-0", [1, 2]))
    assert decoded.payload == {"dev_alias": "ide0-0-0", "reason": "invalid", "reason_code": [1, 2]}
    lifecycle = decode(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, ([5], 1))
    assert (lifecycle.name, lifecycle.detail) == ("invalid", "unknown_1")


def test_unknown_event_id_decodes_generically() -> None:
    """An id the catalog lacks becomes kind event_<id> with its arguments made JSON-safe."""
    decoded = decode(1000, ("vnet0", b"\x00\xff", 3, (1.5, None)))
    assert decoded == DecodedEvent(
        kind="event_1000", name="event_1000", detail=None,
        payload={"args": ["vnet0", "\x00\\xff", 3, [1.5, None]]},
    )
    assert kind_name(1000) == "event_1000"


def test_wrong_arity_decodes_generically_under_its_kind() -> None:
    """Arguments of an unexpected count keep the kind and say what was expected."""
    decoded = decode(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, (5,))
    assert decoded == DecodedEvent(
        "lifecycle", "lifecycle", None, {"args": [5], "expected_arity": 2}
    )


class _BrokenRepr:
    """An object whose repr raises, as a stand-in for anything odd a binding might hand us."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_json_safe_tames_odd_values() -> None:
    """Bytes, non-finite floats, lone surrogates, odd keys, deep nesting and broken objects."""
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    out = json_safe({
        "nan": math.nan, "inf": -math.inf, "raw": bytearray(b"a\xffb"), "sur": "x\ud800",
        1: {2, 3} - {3}, b"k": _BrokenRepr(), "deep": deep,
    })
    assert out["nan"] == "nan" and out["inf"] == "-inf"
    assert out["raw"] == "a\\xffb"
    assert out["sur"] == "x\\ud800"
    assert out["1"] == [2]
    assert out["k"] == "<_BrokenRepr>"
    json.dumps(out, allow_nan=False).encode("utf-8")


# --- properties ----------------------------------------------------------------------------

_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
)
_ANYTHING = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=12,
)
_KNOWN_IDS = sorted(catalog.CATALOG)
_ANY_ID = st.sampled_from(_KNOWN_IDS) | st.integers(min_value=-5, max_value=200)


def _assert_plain_json(decoded: DecodedEvent) -> None:
    """The payload survives strict JSON and UTF-8 unchanged: only plain JSON types inside."""
    text = json.dumps(decoded.payload, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert json.loads(text) == decoded.payload


@QUICK
@given(event_id=_ANY_ID, data=st.data())
def test_decode_never_raises_and_payload_is_json(event_id: int, data: st.DataObject) -> None:
    """For any id and any values of the right arity, decode returns a JSON-safe event."""
    spec = catalog.CATALOG.get(event_id)
    arity = spec.arity if spec else data.draw(st.integers(min_value=0, max_value=6))
    args = tuple(data.draw(_ANYTHING) for _ in range(arity))
    decoded = decode(event_id, args)
    assert decoded.kind == kind_name(event_id)
    assert isinstance(decoded.name, str)
    assert decoded.detail is None or isinstance(decoded.detail, str)
    _assert_plain_json(decoded)


_STR = st.none() | st.text(max_size=40)
_INT = st.integers(min_value=-(2**31), max_value=2**31 - 1)
_BY_LETTER: dict[str, st.SearchStrategy[Any]] = {
    "i": _INT,
    "L": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "K": st.integers(min_value=0, max_value=2**64 - 1),
    "s": _STR,
    "a": st.fixed_dictionaries({"family": _INT, "node": st.text(), "service": st.text()}),
    "l": st.lists(st.tuples(st.text(), st.text()), max_size=3),
    "p": st.dictionaries(
        st.text(max_size=20),
        _INT | st.floats(allow_nan=False) | st.booleans() | st.text(max_size=20),
        max_size=6,
    ),
}


@QUICK
@given(event_id=st.sampled_from(_KNOWN_IDS), data=st.data())
def test_well_typed_arguments_decode_without_fallback(event_id: int, data: st.DataObject) -> None:
    """Arguments of the C types libvirt-python uses always take the specific decoder."""
    spec = catalog.CATALOG[event_id]
    args = tuple(data.draw(_BY_LETTER[letter]) for letter in spec.signature)
    decoded = decode(event_id, args)
    assert "decode_error" not in decoded.payload
    assert "expected_arity" not in decoded.payload
    assert "args" not in decoded.payload
    _assert_plain_json(decoded)
