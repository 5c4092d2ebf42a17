"""The operation table without libvirt: coverage of the API documents, validation, OpenAPI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from virtmon.control.openapi import document
from virtmon.control.operations import (
    EXCLUDED,
    OPERATIONS,
    api_functions,
    coverage_table,
    excluded_reason,
    function_map,
)
from virtmon.control.operations.model import ArgumentError, domain_key, jsonable, validate
from virtmon.control.roles import Peer, RoleMap, allows

ROOT = Path(__file__).resolve().parents[2]
API_DIR = ROOT.parent / "shared" / "libvirt-api"
DOC = ROOT / "docs" / "control-api.md"


def api_texts() -> list[str]:
    """The four API documents' text."""
    files = sorted(API_DIR.glob("*.txt"))
    if len(files) < 4:
        pytest.skip(f"the API documents are not at {API_DIR}")
    return [f.read_text() for f in files]


def test_every_api_function_is_mapped_or_excluded() -> None:
    """Each virXxx function named in the four documents has an operation or a written reason."""
    mapped = function_map()
    missing = sorted(f for f in api_functions(api_texts())
                     if f not in mapped and excluded_reason(f) is None)
    assert missing == []


def test_nothing_is_both_mapped_and_excluded() -> None:
    """An excluded function is not also claimed by an operation."""
    assert set(EXCLUDED) & set(function_map()) == set()


def test_docs_coverage_table_is_current() -> None:
    """docs/control-api.md holds exactly the table the operation table generates."""
    text = DOC.read_text()
    begin, end = "<!-- coverage:begin -->\n", "\n<!-- coverage:end -->"
    shown = text[text.index(begin) + len(begin):text.index(end)]
    assert shown == "\n".join(coverage_table(api_functions(api_texts())))


def test_rows_are_well_formed() -> None:
    """Every row has a summary, C functions (none for alerts), a role, unique parameters."""
    for name, op in OPERATIONS.items():
        assert op.summary and (op.functions or op.target == "alerts"), name
        assert op.role in ("read", "write", "admin"), name
        params = [p.name for p in op.all_params()]
        assert len(params) == len(set(params)), name
        assert all(f.startswith("vir") for f in op.functions), name
        if op.target == "admin":
            assert op.helper_op, name


def test_writes_never_run_on_the_read_only_connection() -> None:
    """Anything that needs more than read uses the read-write connection (or the helper)."""
    for op in OPERATIONS.values():
        if op.role != "read" and op.target != "admin":
            assert op.read_write, op.name


def test_openapi_document_is_valid_and_complete() -> None:
    """The generated document passes openapi-spec-validator and has every operation."""
    validator = pytest.importorskip("openapi_spec_validator")
    doc = document(OPERATIONS)
    validator.validate(doc)
    ids = {item[m]["operationId"] for item in doc["paths"].values() for m in item}
    assert set(OPERATIONS) <= ids
    assert len(ids) == sum(len(item) for item in doc["paths"].values())  # ids are unique


XML_OP = OPERATIONS["domain.xml"]


@pytest.mark.parametrize(("flags", "expected"), [
    (["inactive", "secure"], 3), ("inactive,secure", 3), ("INACTIVE", 2), (8, 8), ("8", 8),
    ([], 0), (None, 0),
])
def test_flags_by_name_or_number(flags: Any, expected: int) -> None:
    """Flags are accepted as names (list, one, comma-separated) or as a number."""
    raw = {"domain": "d"} if flags is None else {"domain": "d", "flags": flags}
    assert validate(XML_OP, raw)["flags"] == expected


@pytest.mark.parametrize(("raw", "key"), [
    ({}, "domain"),
    ({"domain": "d", "bogus": 1}, "bogus"),
    ({"domain": "d", "flags": ["nope"]}, "flags"),
    ({"domain": "d", "flags": -1}, "flags"),
    ({"domain": "d", "flags": 1 << 40}, "flags"),
    ({"domain": "d", "flags": True}, "flags"),
    ({"domain": ["d"]}, "domain"),
    ({"domain": ""}, "domain"),
])
def test_bad_arguments_name_the_key(raw: dict[str, Any], key: str) -> None:
    """Each kind of bad argument is an ArgumentError naming the argument."""
    with pytest.raises(ArgumentError) as caught:
        validate(XML_OP, raw)
    assert caught.value.key == key


def test_typed_enum_boolean_and_lists() -> None:
    """Typed params stay objects; enums by name; booleans from strings; integer lists."""
    args = validate(OPERATIONS["domain.set_scheduler_parameters"],
                    {"domain": "d", "params": {"cpu_shares": 512}, "flags": "live"})
    assert args["params"] == {"cpu_shares": 512} and args["flags"] == 1
    assert validate(OPERATIONS["domain.metadata"], {"domain": "d", "type": "title"})["type"] == 1
    assert validate(OPERATIONS["domain.set_autostart"],
                    {"domain": "d", "autostart": "yes"})["autostart"] is True
    assert validate(OPERATIONS["domain.pin_vcpu"],
                    {"domain": "d", "vcpu": 0, "cpus": "0,2"})["cpus"] == [0, 2]
    with pytest.raises(ArgumentError):
        validate(OPERATIONS["domain.set_memory"], {"domain": "d", "memory_kib": -5})


def test_domain_addressing() -> None:
    """Digits are an id, a UUID (with or without dashes) a UUID, anything else a name."""
    assert domain_key("7") == ("id", 7)
    assert domain_key("c7a5fdbd-edaf-9455-926a-d65c16db1809")[0] == "uuid"
    assert domain_key("c7a5fdbdedaf9455926ad65c16db1809")[0] == "uuid"
    assert domain_key("web-1") == ("name", "web-1")


def test_jsonable() -> None:
    """Tuples become lists, bytes base64, keys strings."""
    assert jsonable({1: (b"\x00\x01", None)}) == {"1": [{"base64": "AAE="}, None]}


def test_role_map() -> None:
    """uids and groups map to the highest role; unknown peers have none."""
    roles = RoleMap.from_config({"admin_uids": [0], "write_uids": [1000], "read_groups": [4242],
                                 "read_uids": [], "write_groups": [], "admin_groups": []})
    assert roles.role(Peer(1, 0, 0)) == "admin"
    assert roles.role(Peer(1, 1000, 1000)) == "write"
    assert roles.role(Peer(1, 4321, 4242)) == "read"
    assert roles.role(Peer(1, 4321, 4321)) == "none"
    assert allows("admin", "write") and allows("write", "read") and not allows("read", "write")
    assert not allows("none", "read")
