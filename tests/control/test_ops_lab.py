"""The operation table on the lab: reads, writes, errors, roles and audit through the Unix socket.

The daemon runs on the test's loop, so every client call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import grp
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest
import structlog

from tests.conftest import call, daemon_config, running_daemon
from tests.control.conftest import Env
from tests.control.peers import probe, unused_ids
from virtmon.control.operations import OPERATIONS
from virtmon.control.operations.model import jsonable
from virtmon.ctl.client import ControlClient, Problem

pytestmark = pytest.mark.lab


async def test_domain_reads(ro: Env, lab_domain: str, lab_conn: Any) -> None:
    """Info, state, XML, stats and lookup of a lab domain agree with a direct libvirt call."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    uuid = await call(dom.UUIDString)
    info = await ro.call("domain.info", domain=lab_domain)
    assert info["state"] == {"name": "running", "value": 1}
    assert info["max_memory_kib"] == (await call(dom.info))[1]
    state = await ro.call("domain.state", domain=uuid)
    assert state["state"]["name"] == "running" and "name" in state["reason"]
    xml = await ro.call("domain.xml", domain=lab_domain, flags=["inactive"])
    assert f"<name>{lab_domain}</name>" in xml
    ident = await ro.call("domain.lookup", domain=str(await call(dom.ID)))
    assert ident == {"name": lab_domain, "uuid": uuid, "id": await call(dom.ID)}
    stats = await ro.call("domain.stats", domain=lab_domain, groups=["state", "cpu_total"])
    assert stats["state.state"] == 1 and "cpu.time" in stats
    vcpus = (await ro.call("domain.vcpus", domain=lab_domain))["vcpus"]
    infos, maps = await call(dom.vcpus)
    assert [(v["number"], v["state"], v["affinity"]) for v in vcpus] == [
        (n, st, [i for i, on in enumerate(m) if on]) for (n, st, _t, _c), m in zip(
            infos, maps, strict=True)]
    assert (await ro.call("domain.scheduler_type", domain=lab_domain))["scheduler"]


async def test_reads_by_get_with_query(ro: Env, lab_domain: str) -> None:
    """A read is also a GET with its arguments in the query string, flags comma-separated."""
    doc = await ro.get("/v1/ops/domain.xml", [("domain", lab_domain), ("flags", "inactive")])
    assert doc["operation"] == "domain.xml" and lab_domain in doc["result"]


async def test_host_interface_admin_reads(ro: Env) -> None:
    """One read of each other document: host info, interface list, admin servers."""
    info = await ro.call("host.info")
    assert info["cpus"] > 0 and info["memory_mib"] > 0
    version = await ro.call("host.lib_version")
    assert version["daemon"]["value"] >= 9000000
    listing = await ro.call("interface.list")
    assert listing["count"] == len(listing["interfaces"])
    servers = await ro.call("admin.servers")
    assert "libvirtd" in servers
    pool = await ro.call("admin.threadpool_get", server="libvirtd")
    assert "maxWorkers" in pool


async def test_writes_refused_when_allow_write_is_off(ro: Env, lab_domain: str) -> None:
    """With control.allow_write off a write is 403, and the domain keeps running."""
    problem = await ro.problem("domain.suspend", domain=lab_domain)
    assert problem.status == 403 and "allow_write" in problem.detail
    assert (await ro.call("domain.state", domain=lab_domain))["state"]["name"] == "running"


async def test_suspend_resume(rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """suspend and resume through the API change the domain's real state."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    assert await rw.call("domain.suspend", domain=lab_domain) is None
    assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_PAUSED
    assert await rw.call("domain.resume", domain=lab_domain) is None
    assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_RUNNING


async def test_wrong_state_is_409_with_the_libvirt_code(rw: Env, lab_domain: str) -> None:
    """Resuming a running domain is 409 carrying VIR_ERR_OPERATION_INVALID (55)."""
    problem = await rw.problem("domain.resume", domain=lab_domain)
    assert problem.status == 409
    assert problem.document["libvirt_code"] == libvirt.VIR_ERR_OPERATION_INVALID
    assert problem.document["libvirt_error"] == "VIR_ERR_OPERATION_INVALID"
    assert problem.detail


async def test_unknown_domain_and_operation_are_404(ro: Env) -> None:
    """An unknown domain is 404 with VIR_ERR_NO_DOMAIN; an unknown operation is 404 too."""
    problem = await ro.problem("domain.info", domain="no-such-domain-xyz")
    assert problem.status == 404 and problem.document["libvirt_code"] == 42
    problem = await ro.problem("domain.fly", domain="x")
    assert problem.status == 404


async def test_bad_arguments_are_400_naming_the_key(ro: Env, lab_domain: str) -> None:
    """Missing, unknown, mistyped arguments and unknown flag names are 400 with the key."""
    cases = [
        ({}, "domain"),
        ({"domain": lab_domain, "color": "red"}, "color"),
        ({"domain": lab_domain, "flags": ["inactive", "sideways"]}, "flags"),
        ({"domain": lab_domain, "flags": "x" * 3}, "flags"),
        ({"domain": 3.5}, "domain"),
    ]
    for args, key in cases:
        problem = await ro.problem("domain.xml", **args)
        assert problem.status == 400, (args, problem)
        assert problem.document["key"] == key, (args, problem.document)


async def test_body_too_large_is_413(short_tmp: Path, lab: str) -> None:
    """A body over control.max_body is 413, as a problem document."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab}, control={"max_body": 1024})
    async with running_daemon(cfg):
        client = ControlClient(str(short_tmp / "control.sock"))
        with pytest.raises(Problem) as caught:
            await asyncio.to_thread(client.post, "/v1/ops/domain.define", {"xml": "x" * 4096})
        assert caught.value.status == 413


async def audit_records(env: Env, domain: str, count: int) -> list[dict[str, Any]]:
    """The journal's audit events of a domain, once there are ``count`` (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        rows = await asyncio.to_thread(
            lambda: list(env.client.stream("/v1/events", [("kind", "audit"), ("follow", "0"),
                                                          ("since", "0")])))
        mine = [e for e in map(json.loads, rows) if e["domain"] == domain]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        await asyncio.sleep(0.1)


async def test_answers_are_counted_by_operation_and_status_in_the_metrics(ro: Env) -> None:
    """virtmon_control_requests_total counts 200, 400 and 403 answers; unknown names add none."""
    await ro.call("host.info")
    assert (await ro.problem("host.cpu_stats", cpu="seven")).status == 400
    assert (await ro.problem("domain.suspend", domain="lab-0")).status == 403
    assert (await ro.problem("no.such_operation")).status == 404
    expected = ['virtmon_control_requests_total{operation="host.info",code="200"} 1',
                'virtmon_control_requests_total{operation="host.cpu_stats",code="400"} 1',
                'virtmon_control_requests_total{operation="domain.suspend",code="403"} 1']
    deadline = time.monotonic() + 10
    while not all(line in (text := ro.daemon.scheduler.exposition.text.decode())
                  for line in expected):
        assert time.monotonic() < deadline, [line for line in expected if line not in text]
        await asyncio.sleep(0.1)
    assert "no.such_operation" not in text


async def test_a_bug_in_an_operation_is_a_500_problem_audited_and_counted(
    rw: Env, lab_domain: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operation body raising what it should not gives a 500 problem document, audited."""
    def broken(_dom: Any, _args: dict[str, Any]) -> Any:
        raise KeyError("a bug")

    monkeypatch.setitem(OPERATIONS, "domain.suspend",
                        dataclasses.replace(OPERATIONS["domain.suspend"], body=broken))
    failures = rw.daemon.executor.stats.failures
    failed = await rw.problem("domain.suspend", domain=lab_domain)
    assert failed.status == 500 and failed.document["title"] == "Internal Server Error"
    assert "KeyError" in failed.document["detail"]
    assert rw.daemon.executor.stats.failures == failures + 1
    [record] = await audit_records(rw, lab_domain, 1)
    assert record["detail"] == "failed" and record["payload"]["status"] == 500


@pytest.mark.skipif(hasattr(libvirt.virDomain, "graphicsReload"),
                    reason="not on Debian 12: this libvirt has virDomainGraphicsReload (10.2+)")
async def test_a_function_the_binding_lacks_is_501_naming_it(rw: Env, lab_domain: str) -> None:
    """domain.graphics_reload on a libvirt older than 10.2: 501 naming the missing function."""
    failed = await rw.problem("domain.graphics_reload", domain=lab_domain)
    assert failed.status == 501 and "graphicsReload()" in failed.document["detail"]
    assert "libvirt-python" in failed.document["detail"]
    [record] = await audit_records(rw, lab_domain, 1)
    assert record["name"] == "domain.graphics_reload" and record["payload"]["status"] == 501


@pytest.mark.stalls_libvirtd
async def test_a_call_past_its_deadline_is_504_and_the_daemon_goes_on(
    short_tmp: Path, lab: str
) -> None:
    """libvirtd stopped: a call is abandoned at control.request_timeout with 504; then 200."""
    from tests.lab import lab as lab_module

    cfg = daemon_config(short_tmp, libvirt={"uri": lab}, control={"request_timeout": 1.0})
    async with running_daemon(cfg) as daemon:
        client = ControlClient(str(short_tmp / "control.sock"), timeout=30)
        with lab_module.paused_libvirtd():
            started = time.monotonic()
            with pytest.raises(Problem) as caught:
                await asyncio.to_thread(client.call, "host.info")
            took = time.monotonic() - started
        assert caught.value.status == 504, caught.value.document
        assert "abandoned" in caught.value.document["detail"]
        # At the configured 1 s, not at the 30 s defaults (call_timeout, request_timeout) nor
        # the client's 30 s timeout; the bound leaves a loaded machine plenty of room.
        assert 1.0 <= took < 20.0
        assert daemon.caller.abandoned_total >= 1
        deadline = time.monotonic() + 30
        while True:  # the connection answers again once libvirtd runs (or is reopened)
            try:
                info = await asyncio.to_thread(client.call, "host.info")
                break
            except Problem as exc:
                assert exc.status in (503, 504) and time.monotonic() < deadline, exc.document
                await asyncio.sleep(0.2)
        assert info["cpus"] > 0


async def test_audit_record_in_the_journal(rw: Env, lab_domain: str) -> None:
    """A write leaves an audit event with uid, pid, command, operation, arguments and result."""
    await rw.call("domain.suspend", domain=lab_domain)
    await rw.call("domain.resume", domain=lab_domain)
    failed = await rw.problem("domain.resume", domain=lab_domain)
    assert failed.status == 409
    mine = await audit_records(rw, lab_domain, 3)
    assert [(e["name"], e["detail"]) for e in mine] == [
        ("domain.suspend", "ok"), ("domain.resume", "ok"), ("domain.resume", "failed")]
    record = mine[0]["payload"]
    assert record["uid"] == os.getuid() and record["pid"] == os.getpid()
    assert record["comm"] and record["operation"] == "domain.suspend"
    assert record["arguments"]["domain"] == lab_domain and record["ok"] is True
    assert mine[2]["payload"]["libvirt_code"] == libvirt.VIR_ERR_OPERATION_INVALID


async def test_role_by_peer_credentials(short_tmp: Path, lab: str) -> None:
    """A caller with a throwaway uid in read_uids reads but gets 403 on an admin op; the same
    uid without a role gets 403 on both."""
    # The socket must be reachable for the other uid: a private directory would stop it first.
    os.chmod(short_tmp, 0o755)
    [uid] = unused_ids(1)
    requests = [{"operation": "host.info", "arguments": {}},
                {"operation": "admin.threadpool_set", "arguments": {"params": {"maxWorkers": 1}}}]
    cfg = daemon_config(short_tmp, libvirt={"uri": lab},
                        control={"socket_mode": "0666", "read_uids": [uid]})
    async with running_daemon(cfg):
        reader = await asyncio.to_thread(probe, short_tmp / "control.sock", uid, requests)
        assert [a["status"] for a in reader] == [200, 403]
    cfg = daemon_config(short_tmp, libvirt={"uri": lab}, control={"socket_mode": "0666"})
    async with running_daemon(cfg):
        outsider = await asyncio.to_thread(probe, short_tmp / "control.sock", uid, requests)
        assert [a["status"] for a in outsider] == [403, 403]


async def test_openapi_lists_every_operation(ro: Env) -> None:
    """/v1/openapi.json has a path per operation, POST always, GET for reads."""
    doc = await ro.get("/v1/openapi.json")
    for name, op in OPERATIONS.items():
        item = doc["paths"][f"/v1/ops/{name}"]
        assert item["post"]["operationId"] == name
        assert ("get" in item) == (op.role == "read")


async def test_fresh_domain_reads(ro: Env, lab_domain: str) -> None:
    """?fresh=1 asks libvirt; without it the inventory answers; both agree on the state."""
    fresh = await ro.get(f"/v1/domains/{lab_domain}", [("fresh", "1")])
    assert fresh["fresh"] is True and fresh["name"] == lab_domain
    assert fresh["state"]["name"] == "running"
    # The daemon started before lab_domain made the domain and learns of it from libvirt's
    # events: the cached read may not know it yet, or not as running. Poll it, bounded.
    deadline = time.monotonic() + 30
    while True:
        try:
            cached = await ro.get(f"/v1/domains/{lab_domain}")
        except Problem as exc:
            assert exc.status == 404, exc.document
            cached = {"state": "unknown to the inventory"}
        if cached["state"] == fresh["state"]["name"]:
            break
        assert time.monotonic() < deadline, f"the inventory says {cached['state']!r}"
        await asyncio.sleep(0.1)
    listing = await ro.get("/v1/domains", [("fresh", "1")])
    assert lab_domain in {d["name"] for d in listing["domains"]}


async def test_status_reports_helper_and_control(ro: Env) -> None:
    """/v1/status has the admin helper and the control API's counters."""
    await ro.call("host.info")
    status = await ro.get("/v1/status")
    assert status["admin_helper"]["enabled"] is True
    assert status["control"]["calls"] >= 1 and status["control"]["allow_write"] is False


def _no_extra_required(name: str) -> bool:
    op = OPERATIONS[name]
    return all(not p.required for p in op.params)


def between(before: Any, answer: Any, after: Any) -> bool:
    """Whether ``answer`` agrees with libvirt's own answers just before and after it: the same
    structure and text, each number within the two (a counter may move between the calls)."""
    if isinstance(answer, dict):
        return (isinstance(before, dict) and isinstance(after, dict)
                and before.keys() == answer.keys() == after.keys()
                and all(between(before[k], answer[k], after[k]) for k in answer))
    if isinstance(answer, list):
        return (isinstance(before, list) and isinstance(after, list)
                and len(before) == len(answer) == len(after)
                and all(map(between, before, answer, after)))
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        return (type(before) is type(answer) is type(after)
                and min(before, after) <= answer <= max(before, after))
    return bool(before == answer == after)


async def test_every_simple_read_agrees_with_libvirt(
        ro: Env, lab_domain: str, lab: str) -> None:
    """Every read needing only the domain (or nothing) answers what libvirt itself answers on a
    read-only connection of the test's own (the same call, between two direct ones), or libvirt's
    own error as a 4xx; never a 5xx."""
    conn = await call(libvirt.openReadOnly, lab)
    statuses: dict[str, int] = {}
    disagree: dict[str, Any] = {}
    try:
        dom = await call(conn.lookupByName, lab_domain)
        for name, op in OPERATIONS.items():
            if op.role != "read" or not _no_extra_required(name):
                continue
            if op.target not in ("domain", "host"):
                continue
            args = {"domain": lab_domain} if op.target == "domain" else {}
            full = {p.name: p.default for p in op.params} | args
            target = dom if op.target == "domain" else conn
            for _attempt in range(3):  # a gauge may move between the calls: ask again
                before = await _direct(op.body, target, full)
                try:
                    answer: Any = await ro.call(name, **args)
                    statuses[name] = 200
                except Problem as exc:
                    statuses[name] = exc.status
                    answer = ("error", exc.document.get("libvirt_code"))
                after = await _direct(op.body, target, full)
                if between(before, answer, after):
                    disagree.pop(name, None)
                    break
                disagree[name] = (before, answer, after)
    finally:
        await call(conn.close)
    assert len(statuses) > 50
    assert {n: s for n, s in statuses.items() if s >= 500} == {}
    assert disagree == {}
    assert statuses["domain.info"] == statuses["host.capabilities"] == 200


async def _direct(body: Any, target: Any, args: dict[str, Any]) -> Any:
    """The operation's body on the test's own connection, as JSON (or libvirt's error code)."""
    try:
        return jsonable(await call(body, target, args))
    except libvirt.libvirtError as exc:
        return ("error", exc.get_error_code())


async def test_secure_xml_needs_the_read_write_connection(ro: Env, lab_domain: str) -> None:
    """domain.xml with the secure flag is refused while allow_write is off (passwords)."""
    problem = await ro.problem("domain.xml", domain=lab_domain, flags=["secure"])
    assert problem.status == 403


async def test_define_snapshot_metadata_undefine(rw: Env, lab_conn: Any) -> None:
    """define from XML, start, metadata, snapshot create/revert/delete, destroy, undefine."""
    from tests.lab import lab as lab_module

    name = f"t-api-{os.getpid()}-{int(time.time())}"
    xml = await call(lab_module.new_domain_xml, lab_conn, name)
    try:
        defined = await rw.call("domain.define", xml=xml)
        assert defined["name"] == name
        assert (await rw.call("domain.is_persistent", domain=name)) is True
        await rw.call("domain.set_metadata", domain=name, type="title", metadata="api test",
                      flags=["config"])
        assert await rw.call("domain.metadata", domain=name, type="title",
                             flags="config") == "api test"
        snap = await rw.call("domain.snapshot_create", domain=name)
        assert snap["name"] in (await rw.call("domain.snapshots", domain=name))["snapshots"]
        await rw.call("domain.snapshot_revert", domain=name, snapshot=snap["name"])
        await rw.call("domain.snapshot_delete", domain=name, snapshot=snap["name"])
        await rw.call("domain.start", domain=name)
        assert (await rw.call("domain.state", domain=name))["state"]["name"] == "running"
        await rw.call("domain.destroy", domain=name)
        await rw.call("domain.undefine", domain=name, flags=["snapshots_metadata"])
        missing = await rw.problem("domain.info", domain=name)
        assert missing.status == 404
    finally:
        await call(lab_module.remove_domain, lab_conn, name)


async def test_every_lifecycle_verb_on_a_real_domain(rw: Env, lab_domain: str) -> None:
    """shutdown, reboot, reset, destroy, start, suspend, resume: each acts, with its event."""
    from tests.streamclient import follow, lifecycle

    async with follow(rw.sock, f"domain={lab_domain}") as stream:
        # No guest OS: shutdown and reboot are ACPI requests libvirt accepts; nothing answers.
        assert await rw.call("domain.shutdown", domain=lab_domain, flags=["acpi_power_btn"]) \
            is None
        assert await rw.call("domain.reboot", domain=lab_domain, flags=["acpi_power_btn"]) is None
        assert await rw.call("domain.reset", domain=lab_domain) is None
        await stream.wait_for(lambda e: e["kind"] == "reboot")
        assert await rw.call("domain.destroy", domain=lab_domain) is None
        await stream.wait_for(lifecycle(lab_domain, "stopped", "destroyed"))
        assert await rw.call("domain.start", domain=lab_domain) is None
        await stream.wait_for(lifecycle(lab_domain, "started", "booted"))
        assert await rw.call("domain.suspend", domain=lab_domain) is None
        await stream.wait_for(lifecycle(lab_domain, "suspended", "paused"))
        assert await rw.call("domain.resume", domain=lab_domain) is None
        await stream.wait_for(lifecycle(lab_domain, "resumed", "unpaused"))


async def test_the_socket_gets_its_mode_and_group_and_a_missing_group_is_logged(
    short_tmp: Path, lab: str
) -> None:
    """control.socket_mode and socket_group are applied, again after a restart; an unknown group
    is a logged warning."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab},
                        control={"socket_mode": "0660", "socket_group": "virtmon-lab"})
    for when in ("first", "after a restart"):  # the second finds the first's socket gone
        async with running_daemon(cfg):
            info = (short_tmp / "control.sock").stat()
            assert stat.S_IMODE(info.st_mode) == 0o660, when
            assert info.st_gid == grp.getgrnam("virtmon-lab").gr_gid, when
    missing = daemon_config(short_tmp, libvirt={"uri": lab},
                            control={"socket_group": "no-such-group-here"})
    with structlog.testing.capture_logs() as logs:
        async with running_daemon(missing):
            client = ControlClient(str(short_tmp / "control.sock"))
            assert (await asyncio.to_thread(client.call, "host.info"))["cpus"] > 0
    [warning] = [e for e in logs if e["event"] == "virtmon.control.socket_group_not_set"]
    assert warning["group"] == "no-such-group-here" and warning["error"] == "no such group"
