"""The operation table without libvirt: coverage of the API documents, validation, OpenAPI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openapi_spec_validator
import pytest

from virtmon.config import ControlConfig
from virtmon.control.executor import privileged
from virtmon.control.openapi import document
from virtmon.control.operations import (
    EXCLUDED,
    OPERATIONS,
    coverage_functions,
    coverage_table,
    excluded_reason,
    function_map,
    libvirt_api_functions,
)
from virtmon.control.operations.model import ArgumentError, domain_key, jsonable, validate
from virtmon.control.roles import Peer, RoleMap, allows

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "control-api.md"


def test_libvirt_api_description_is_read_whole() -> None:
    """The installed libvirt-api.xml/libvirt-admin-api.xml give every domain, host, interface and
    admin function (hundreds), and none of the storage or network API."""
    functions = libvirt_api_functions()
    assert {"virDomainCreate", "virNodeGetInfo", "virInterfaceCreate",
            "virAdmServerGetThreadPoolParameters", "virConnectDomainEventCallback"} <= functions
    assert not {f for f in functions if f.startswith(("virStoragePool", "virNetwork"))}
    assert len(functions) > 300


def test_a_missing_api_description_names_the_package() -> None:
    """Without libvirt-dev's files the coverage checks fail saying what to install."""
    with pytest.raises(FileNotFoundError, match="libvirt-dev"):
        libvirt_api_functions(ROOT / "no-such-dir")


def test_every_api_function_is_mapped_or_excluded() -> None:
    """Each function of libvirt's installed API description (domain, host, interface, admin)
    has an operation or a written reason."""
    mapped = function_map()
    missing = sorted(f for f in libvirt_api_functions()
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
    assert shown == "\n".join(coverage_table(coverage_functions()))


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


def test_the_callers_role_picks_the_connection() -> None:
    """A read caller never gets more than a read-only libvirt connection, whatever the
    operation; write and admin callers get the read-write one when allow_write is on."""
    for op in OPERATIONS.values():
        libvirt_target = op.target not in ("admin", "alerts")
        for allow_write in (False, True):
            if libvirt_target:
                assert not privileged(op, "read", allow_write), op.name
            for role in ("write", "admin"):
                assert privileged(op, role, allow_write) == (
                    op.target == "admin" or (libvirt_target and allow_write)), (op.name, role)


def test_what_libvirt_refuses_read_only_needs_write() -> None:
    """The functions libvirt 9.0 refuses on a read-only connection (virCheckReadOnlyGoto) are
    write operations, and the flag-dependent ones declare the flags that need write."""
    refused = {"virDomainGetTime", "virDomainGetHostname", "virDomainGetFSInfo",
               "virDomainGetGuestInfo", "virDomainGetGuestVcpus",
               "virDomainAuthorizedSSHKeysGet", "virDomainGetLaunchSecurityInfo",
               "virDomainMigrateGetMaxSpeed", "virConnectGetDomainCapabilities",
               "virDomainSaveImageGetXMLDesc", "virConnectDomainXMLToNative",
               "virConnectDomainXMLFromNative", "virDomainBlockPeek", "virDomainMemoryPeek",
               "virDomainScreenshot", "virConnectCompareHypervisorCPU",
               "virConnectBaselineHypervisorCPU", "virNodeGetSEVInfo"}
    for function in refused:
        for name in function_map()[function]:
            assert OPERATIONS[name].role != "read", name
    conditional = {"domain.xml": {"flags": ["secure"]}, "domain.managed_save_xml": {
        "flags": ["secure"]}, "domain.vcpus_count": {"flags": ["guest"]},
        "domain.interface_addresses": {"source": "agent"}}
    for name, raw in conditional.items():
        op = OPERATIONS[name]
        assert op.needs(validate(op, {"domain": "d"})) == "read", name
        assert op.needs(validate(op, {"domain": "d", **raw})) == "write", name


def test_openapi_document_is_valid_and_complete() -> None:
    """The generated document passes openapi-spec-validator and has every operation."""
    doc = document(OPERATIONS)
    openapi_spec_validator.validate(doc)
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
    roles = RoleMap.from_config(ControlConfig(admin_uids=(0,), write_uids=(1000,),
                                              read_groups=(4242,)))
    assert roles.role(Peer(1, 0, 0)) == "admin"
    assert roles.role(Peer(1, 1000, 1000)) == "write"
    assert roles.role(Peer(1, 4321, 4242)) == "read"
    assert roles.role(Peer(1, 4321, 4321)) == "none"
    assert allows("admin", "write") and allows("write", "read") and not allows("read", "write")
    assert not allows("none", "read")


def test_group_membership_is_looked_up_on_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user removed from a reading group loses the role on its next request (same peer, same
    connection): supplementary groups come from the group database each time, never cached."""
    members = {"alice": [4321, 4242]}
    monkeypatch.setattr("pwd.getpwuid", lambda uid: type("pw", (), {"pw_name": "alice"})())
    monkeypatch.setattr("os.getgrouplist", lambda name, gid: members[name])
    roles = RoleMap.from_config(ControlConfig(read_groups=(4242,)))
    peer = Peer(pid=1, uid=4321, gid=4321)
    assert roles.role(peer) == "read"
    members["alice"] = [4321]  # gpasswd -d alice virtmon
    assert roles.role(peer) == "none"
