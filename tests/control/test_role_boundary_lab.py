"""The read role never does what libvirt's read-only connection forbids: every operation, on a lab.

A real read-role caller (a throwaway uid that no user or group database names, over the real
socket) calls every operation of the table, with arguments crafted to be dangerous where the
operation takes a path, a binary, a URI or XML: an emulator that leaves a marker file when run,
a root-only file (and, beside it, a missing one), a domain XML naming both. The daemon has
``control.allow_write`` on, so its read-write connection exists. Nothing may run the marker,
tell the root-only file from the missing one, or show its content; whatever needs more than
read is refused before it runs. The same daemon, called by a write-role uid, still does what
the write role may, and every privileged call or refusal is audited with the caller's uid.

The list of operations is the table's at test time, so a new operation is covered without
editing this test.
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import os
import secrets
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.conftest import call, daemon_config, running_daemon
from tests.control.peers import probe, unused_ids
from virtmon.control.operations import OPERATIONS
from virtmon.control.operations.model import ArgumentError, Operation, Param, validate
from virtmon.ctl.client import ControlClient

pytestmark = pytest.mark.lab
# The root-only file's content starts with this; a random part follows.
ROOT_ONLY_TEXT = "root-only-secret"


class Bait:
    """The dangerous things a crafted argument names, and how to tell that one was touched."""

    def __init__(self, base: Path, domain: str, interface: str) -> None:
        os.chmod(base, 0o755)
        self.domain = domain
        self.interface = interface
        self.marks = base / "marks"
        self.marks.mkdir(mode=0o1777)
        os.chmod(self.marks, 0o1777)
        self.emulator = base / "emulator.sh"
        self.emulator.write_text(f"#!/bin/sh\ntouch {self.marks}/ran-$$\nexit 1\n")
        os.chmod(self.emulator, 0o755)
        private = base / "private"
        private.mkdir(mode=0o700)
        self.token = f"{ROOT_ONLY_TEXT}-{secrets.token_hex(8)}"
        self.secret = private / "secret"
        self.secret.write_text(self.token + "\n")
        os.chmod(self.secret, 0o600)
        self.missing = private / "absent"
        self.domain_xml = (
            "<domain type='kvm'><name>probe-bait</name><memory>65536</memory>"
            "<os><type arch='x86_64'>hvm</type></os><devices>"
            f"<emulator>{self.emulator}</emulator>"
            f"<disk type='file' device='disk'><source file='{self.secret}'/>"
            "<target dev='vda'/></disk></devices></domain>")

    def value(self, param: Param, path: Path, every_flag: bool) -> Any:
        """A crafted value for one parameter: dangerous where it can be, plausible otherwise.
        Optional strings other than an emulator or a URI are left out: a bad architecture or
        machine would stop libvirt before it reached the emulator."""
        kind = param.kind
        if kind == "domain":
            return self.domain
        if kind == "interface":
            return self.interface
        if kind == "xml":
            return self.domain_xml
        if kind == "strings":
            return [self.domain_xml]
        if kind == "string":
            if param.name == "emulator":
                return str(self.emulator)
            if param.name == "uri":
                return f"qemu+ext:///system?command={self.emulator}"
            return str(path)
        if kind == "flags":
            return functools.reduce(operator.or_, param.choices.values(), 0) if every_flag else 0
        if kind == "enum":
            return sorted(param.choices)[0] if param.required else param.default
        return {"integer": 0, "unsigned": 1, "number": 1.0, "boolean": False, "typed": {},
                "integers": [4]}[kind]

    def calls(self, op: Operation) -> list[dict[str, Any]]:
        """Each call to make: defaults, every flag at once, each enum value; every string
        twice, naming the root-only file and the missing one (``twin`` pairs them)."""
        params = op.all_params()
        variants: list[dict[str, Any]] = [{"every_flag": False}]
        if any(p.kind == "flags" and p.choices for p in params):
            variants.append({"every_flag": True})
        for p in params:
            for choice in sorted(p.choices) if p.kind == "enum" else ():
                variants.append({"every_flag": False, p.name: choice})
        # Only calls with a string that names the path come in twins (the XML names the secret).
        paths = [p for p in params if p.kind == "string" and p.required]
        out = []
        for number, variant in enumerate(variants):
            for path in (self.secret, self.missing):
                args = {p.name: variant.get(p.name, self.value(p, path, variant["every_flag"]))
                        for p in params if p.required or p.kind in ("flags", "enum")
                        or p.name in ("emulator", "uri")}
                args = {k: v for k, v in args.items() if v is not None}
                out.append({"operation": op.name, "arguments": args, "path": str(path),
                            "twin": f"{op.name}#{number}" if paths else ""})
        return out


def needed_role(op: Operation, arguments: dict[str, Any]) -> str | None:
    """The role the table says these arguments need (None: they are not valid arguments)."""
    try:
        return op.needs(validate(op, arguments))
    except ArgumentError:
        return None


async def audit_events(client: ControlClient, uid: int, count: int) -> list[dict[str, Any]]:
    """The journal's audit records, once ``count`` of them are ``uid``'s (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        rows = await asyncio.to_thread(lambda: list(client.stream(
            "/v1/events", [("kind", "audit"), ("follow", "0"), ("since", "0")])))
        records = [json.loads(r)["payload"] for r in rows]
        if sum(r["uid"] == uid for r in records) >= count or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.2)


async def test_a_read_caller_cannot_reach_past_read_only_and_a_write_caller_can(
    short_tmp: Path, lab: str, lab_domain: str, lab_conn: Any
) -> None:
    """Every operation as a read uid: no marker runs, no root-only file leaks, whatever needs
    more is refused; the write uid gets secure XML and domain capabilities; all is audited."""
    reader, writer = unused_ids(2)
    interfaces = await call(lab_conn.listAllInterfaces, 0)
    bait = Bait(short_tmp, lab_domain, interfaces[0].name() if interfaces else "lo")
    cfg = daemon_config(short_tmp, libvirt={"uri": lab}, control={
        "allow_write": True, "socket_mode": "0666", "read_uids": [reader],
        "write_uids": [writer], "request_timeout": 20.0})
    calls = [c for op in OPERATIONS.values() for c in bait.calls(op)]
    async with running_daemon(cfg):
        sock = short_tmp / "control.sock"
        answers = await asyncio.to_thread(probe, sock, reader, [
            {"operation": c["operation"], "arguments": c["arguments"]} for c in calls])
        written = await asyncio.to_thread(probe, sock, writer, write_calls(bait))
        records = await audit_events(ControlClient(str(sock)), writer, len(write_calls(bait)))

    assert not list(bait.marks.iterdir()), "libvirtd ran the read caller's emulator"
    assert bait.token not in json.dumps(answers), "a root-only file's content reached a reader"
    by_twin: dict[str, list[tuple[int, str]]] = {}
    faults: list[str] = []
    ran_read = 0
    for request, answer in zip(calls, answers, strict=True):
        op = OPERATIONS[request["operation"]]
        document, status = answer["document"], answer["status"]
        needed = needed_role(op, request["arguments"])
        label = f"{op.name} {request['arguments']}"
        if needed is None:
            if status != 400:
                faults.append(f"{label}: invalid arguments answered {status}")
        elif needed != "read":
            if status != 403 or document.get("needs") != needed:
                faults.append(f"{label}: needs {needed}, answered {status} {document}")
        else:
            ran_read += 1
            if status >= 500 and status != 501:
                faults.append(f"{label}: {status} {document}")
            if document.get("libvirt_code") == libvirt.VIR_ERR_OPERATION_DENIED:
                faults.append(f"{label}: the table says read, libvirt refuses it read-only: "
                              f"{document.get('detail')}")
        if request["twin"]:
            detail = json.dumps(document).replace(request["path"], "<path>")
            by_twin.setdefault(request["twin"], []).append((status, detail))
    faults += [f"{twin}: the root-only file and a missing one answer differently: {pair}"
               for twin, pair in by_twin.items() if pair[0] != pair[1]]
    assert faults == [], "\n".join(faults)
    assert ran_read > 100  # the read operations did run, with their crafted arguments

    check_write_answers(bait, written)
    check_audit(records, reader, writer)


def write_calls(bait: Bait) -> list[dict[str, Any]]:
    """What the write role may do that the read role may not (the write path still works)."""
    d = bait.domain
    return [
        {"operation": "domain.xml", "arguments": {"domain": d, "flags": ["secure"]}},
        {"operation": "domain.xml", "arguments": {"domain": d, "flags": ["migratable"]}},
        {"operation": "host.domain_capabilities", "arguments": {}},
        {"operation": "domain.guest_vcpus", "arguments": {"domain": d}},
        {"operation": "domain.interface_addresses", "arguments": {"domain": d,
                                                                  "source": "agent"}},
        {"operation": "domain.info", "arguments": {"domain": d}},
    ]


def check_write_answers(bait: Bait, answers: list[dict[str, Any]]) -> None:
    """The write caller's answers: XML and capabilities come back; the agent calls fail with
    libvirt's own error (no agent in the lab) rather than a refusal or a silent null."""
    secure, migratable, caps, vcpus, addresses, info = answers
    assert secure["status"] == 200 and f"<name>{bait.domain}</name>" in secure["document"][
        "result"]
    assert migratable["status"] == 200 and "<domain" in migratable["document"]["result"]
    assert caps["status"] == 200 and "<domainCapabilities" in caps["document"]["result"]
    for answer in (vcpus, addresses):
        document = answer["document"]
        assert 400 <= answer["status"] < 500 and answer["status"] != 403, answer
        assert document["libvirt_code"] not in (0, libvirt.VIR_ERR_OPERATION_DENIED), answer
    assert info["status"] == 200 and info["document"]["result"]["state"]["name"] == "running"


def check_audit(records: list[dict[str, Any]], reader: int, writer: int) -> None:
    """Every write-caller call is audited (its reads run on the read-write connection), and so
    is every refusal of the read caller, each with its uid and the role it lacked."""
    written = [r for r in records if r["uid"] == writer]
    assert [r["operation"] for r in written] == [
        "domain.xml", "domain.xml", "host.domain_capabilities", "domain.guest_vcpus",
        "domain.interface_addresses", "domain.info"]
    assert all(r["privileged"] and r["caller_role"] == "write" for r in written)
    refused = [r for r in records if r["uid"] == reader and r.get("status") == 403]
    assert {r["operation"] for r in refused} >= {
        "host.domain_capabilities", "domain.xml_to_native", "domain.save_image_xml",
        "domain.xml", "domain.interface_addresses", "domain.destroy"}
    assert all(r["caller_role"] == "read" and not r["ok"] for r in refused)
