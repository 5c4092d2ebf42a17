"""The alerts operations through the control socket of a running daemon (test driver, lab)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest

from tests.alerts.control_env import alert_daemon, domains_at, receiver
from tests.alerts.receiver import Recorder, serving, wait_until
from tests.conftest import call, daemon_config, running_daemon
from tests.integration.test_lab_events import qemu_pid
from virtmon.alerts import formats
from virtmon.alerts.silences import Silence, parse_duration
from virtmon.control.openapi import document
from virtmon.control.operations import OPERATIONS
from virtmon.ctl.client import ControlClient

ROOT = Path(__file__).resolve().parents[2]
WRITES = {"alerts.retry_dead": {"all": True}, "alerts.silence": {"domain": "x", "duration": "1m"},
          "alerts.unsilence": {"id": 1}, "alerts.test": {"receiver": "hook"}}
READS = {"alerts.list": {}, "alerts.outbox": {}, "alerts.dead_letters": {},
         "alerts.silences": {}}


async def test_dead_letter_is_listed_and_retry_delivers_it(short_tmp: Path) -> None:
    """A 400 makes a listed dead letter; retried, it reaches the now-willing receiver, same key."""
    rec = Recorder(respond=lambda _r: (400, {}, 0.0))
    async with serving(rec), alert_daemon(short_tmp, [receiver("hook", rec.url)]) as env:
        env.crash("web-1")
        firing = await env.alert("web-1", "firing")
        assert firing["rule"] == "Crash" and firing["silenced"] is False
        await wait_until(lambda: bool(rec.requests))
        deadline = time.monotonic() + 10
        while not (dead := (await env.call("alerts.dead_letters"))["rows"]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        [row] = dead
        assert row["status"] == "firing" and row["attempts"] == 1 and row["state"] == "dead"
        assert row["last_error"].startswith("HTTP 400")
        assert (await env.problem("alerts.retry_dead", id=row["id"] + 1000)).status == 404
        assert (await env.problem("alerts.retry_dead")).status == 400
        rec.respond = lambda _r: (200, {}, 0.0)
        assert await env.call("alerts.retry_dead", id=row["id"]) == {"retried": 1, "superseded": 0}
        await rec.wait_for(lambda: len(rec.requests) == 2)
        assert rec.requests[1].headers[formats.IDEMPOTENCY_HEADER] == row["key"]
        assert (await env.call("alerts.dead_letters"))["rows"] == []
        assert await env.call("alerts.retry_dead", all=True) == {"retried": 0, "superseded": 0}


async def test_outbox_shows_pending_rows_with_attempts_and_error(short_tmp: Path) -> None:
    """A receiver answering 503: the row stays pending with its attempts, next attempt, error;
    /v1/status and systemd's STATUS= count it."""
    rec = Recorder(respond=lambda _r: (503, {}, 0.0))
    async with serving(rec), alert_daemon(short_tmp, [receiver(
            "hook", rec.url, backoff_initial=60.0, backoff_max=60.0)]) as env:
        env.crash("web-1")
        await rec.wait_for(lambda: bool(rec.requests))
        deadline = time.monotonic() + 10
        while True:
            outbox = await env.call("alerts.outbox", receiver="hook")
            rows = outbox["rows"]
            if rows and rows[0]["attempts"] == 1:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        [row] = rows
        assert row["state"] == "pending" and row["last_error"].startswith("HTTP 503")
        assert row["next_attempt"] > time.time() + 20  # backing off 30..60 s
        [queue] = outbox["queues"]
        assert queue["pending"] == 1 and queue["url"] == rec.url and queue["oldest_age"] >= 0
        status = await asyncio.to_thread(env.client.get, "/v1/status")
        assert status["alerts"]["outbox"]["pending"] == 1
        assert status["alerts"]["active"] == 1 and status["alerts"]["receivers"] == ["hook"]
        assert ", outbox 1" in env.daemon.status_line()  # systemd's STATUS=
        assert (await env.problem("alerts.outbox", receiver="nope")).status == 404


async def test_silenced_domain_is_listed_not_delivered_until_unsilenced(short_tmp: Path) -> None:
    """A crash resolved within its silence is never sent; one still firing at expiry is, then."""
    rec = Recorder()
    async with serving(rec), alert_daemon(short_tmp, [receiver("hook", rec.url)]) as env:
        made = await env.call("alerts.silence", domain="web-*", duration="1h",
                              comment="maintenance")
        assert made["active"] is True and made["comment"] == "maintenance"
        assert made["ends_at"] - made["starts_at"] == 3600
        [listed] = (await env.call("alerts.silences"))["silences"]
        assert listed["id"] == made["id"] and listed["domain"] == "web-*"
        env.crash("web-1")
        env.crash("db-1")  # a barrier: rows of one URL are sent in order
        await rec.wait_for(lambda: "db-1" in domains_at(rec))
        alert = await env.alert("web-1", "firing")
        assert alert["silenced"] is True and alert["silence_id"] == made["id"]
        env.start("web-1")
        env.crash("db-2")
        await rec.wait_for(lambda: "db-2" in domains_at(rec))
        assert (await env.alert("web-1", "resolved"))["silenced"] is True
        assert all(d.startswith("db-") for d in domains_at(rec) + domains_at(rec, "resolved"))
        assert (await env.call("alerts.outbox"))["rows"] == []
        ended = await env.call("alerts.unsilence", id=made["id"])
        assert ended["active"] is False
        assert (await env.call("alerts.silences"))["silences"] == []
        assert len((await env.call("alerts.silences", all=True))["silences"]) == 1
        env.crash("web-1")
        await rec.wait_for(lambda: "web-1" in domains_at(rec))
        assert (await env.alert("web-1", "firing"))["silenced"] is False
        # Long enough for the crash to be stored and checked before the silence ends, even on a
        # loaded machine; short enough to wait for its expiry.
        short = await env.call("alerts.silence", domain="exp-*", duration="5s")
        env.crash("exp-1")
        silenced = await env.alert("exp-1", "firing")
        assert silenced["silence_id"] == short["id"]
        assert "exp-1" not in domains_at(rec)
        # Still firing when the silence expires: announced then, with its original start.
        await rec.wait_for(lambda: "exp-1" in domains_at(rec), timeout=30)
        assert time.time() >= short["ends_at"]
        [sent] = [a for r in rec.requests for a in r.json()["alerts"]
                  if a["labels"].get("domain") == "exp-1"]
        assert sent["status"] == "firing"
        assert sent["starts_at"] == formats.rfc3339(silenced["starts_at"])
        assert (await env.alert("exp-1", "firing"))["silenced"] is False
        env.start("exp-1")
        await rec.wait_for(lambda: "exp-1" in domains_at(rec, "resolved"))


async def test_unsilence_releases_the_alerts_it_kept_quiet_once(short_tmp: Path) -> None:
    """unsilence announces a still-firing silenced alert at once, once; a second silence holds."""
    rec = Recorder()
    async with serving(rec), alert_daemon(short_tmp, [receiver("hook", rec.url)]) as env:
        by_domain = await env.call("alerts.silence", domain="web-*", duration="1h")
        by_rule = await env.call("alerts.silence", rule="Crash", domain="web-2", duration="1h")
        env.crash("web-1")
        env.crash("web-2")
        await env.alert("web-1", "firing")
        await env.alert("web-2", "firing")
        await env.call("alerts.unsilence", id=by_domain["id"])
        await rec.wait_for(lambda: "web-1" in domains_at(rec), timeout=30)
        env.crash("db-1")  # a barrier: rows of one URL are sent in order
        await rec.wait_for(lambda: "db-1" in domains_at(rec))
        assert domains_at(rec) == ["web-1", "db-1"]  # web-2 is still covered by by_rule
        assert (await env.alert("web-2", "firing"))["silenced"] is True
        await env.call("alerts.unsilence", id=by_rule["id"])
        await rec.wait_for(lambda: "web-2" in domains_at(rec), timeout=30)
        env.start("web-2")
        await rec.wait_for(lambda: "web-2" in domains_at(rec, "resolved"))
        assert domains_at(rec) == ["web-1", "db-1", "web-2"]
        keys = [r.headers[formats.IDEMPOTENCY_HEADER] for r in rec.requests]
        assert len(keys) == len(set(keys))


async def test_silence_of_a_rule_and_its_survival_of_a_restart(short_tmp: Path) -> None:
    """A rule silence is stored in SQLite: after a restart it is listed and still enforced."""
    rec = Recorder()
    async with serving(rec):
        hooks = [receiver("hook", rec.url)]
        async with alert_daemon(short_tmp, hooks) as env:
            assert (await env.problem("alerts.silence", rule="Nope", duration="1h")).document[
                "key"] == "rule"
            made = await env.call("alerts.silence", rule="Cr*", duration="2h")
        async with alert_daemon(short_tmp, hooks) as env:
            [kept] = (await env.call("alerts.silences"))["silences"]
            assert kept["id"] == made["id"] and kept["rule"] == "Cr*"
            env.crash("web-9")
            assert (await env.alert("web-9", "firing"))["silenced"] is True
            test = await env.call("alerts.test", receiver="hook")  # not subject to silences
            await rec.wait_for(lambda: bool(rec.requests))
            assert [r.headers[formats.IDEMPOTENCY_HEADER] for r in rec.requests] == [test["key"]]


# How long the receiver a test alert was not meant for is watched: ample for a delivery (the
# control shows one arrives within it).
OTHER_WITHIN = 1.0


async def test_test_alert_reaches_the_receiver_with_its_idempotency_key(short_tmp: Path) -> None:
    """alerts.test queues a VirtmonTest alert for one receiver; it arrives with the key header,
    and not at the other receiver, which gets one of its own within the same wait."""
    rec, other = Recorder(), Recorder()
    async with serving(rec), serving(other), alert_daemon(
            short_tmp, [receiver("hook", rec.url), receiver("other", other.url)]) as env:
        sent = await env.call("alerts.test", receiver="hook", summary="hello")
        assert sent["queued"] == 1 and sent["urls"] == [rec.url]
        await rec.wait_for(lambda: bool(rec.requests))
        [request] = rec.requests
        assert request.headers[formats.IDEMPOTENCY_HEADER] == sent["key"]
        [body] = request.json()["alerts"]
        assert body["key"] == sent["key"] and body["rule"] == "VirtmonTest"
        assert body["labels"]["receiver"] == "hook" and body["annotations"]["summary"] == "hello"
        await asyncio.sleep(OTHER_WITHIN)
        assert other.requests == []
        theirs = await env.call("alerts.test", receiver="other", summary="control")
        await other.wait_for(lambda: bool(other.requests), OTHER_WITHIN)
        assert [r.headers[formats.IDEMPOTENCY_HEADER] for r in other.requests] == [theirs["key"]]
        assert (await env.problem("alerts.test", receiver="nope")).status == 404


async def test_bad_arguments_are_400_with_the_key(short_tmp: Path) -> None:
    """Wrong state, no target, a bad duration name their argument; unknown ids are 404."""
    async with alert_daemon(short_tmp, []) as env:
        for operation, arguments, key in (
                ("alerts.list", {"state": "burning"}, "state"),
                ("alerts.silence", {"duration": "1h"}, "rule"),
                ("alerts.silence", {"domain": "x", "duration": "forever"}, "duration"),
                ("alerts.silence", {"domain": "x", "duration": "0s"}, "duration"),
                ("alerts.silence", {"domain": "x"}, "duration"),
                ("alerts.unsilence", {"id": -1}, "id")):
            problem = await env.problem(operation, **arguments)
            assert (problem.status, problem.document.get("key")) == (400, key), operation
        assert (await env.problem("alerts.unsilence", id=999)).status == 404
        assert (await env.call("alerts.list"))["alerts"] == []


async def test_writes_refused_when_allow_write_is_off(short_tmp: Path) -> None:
    """With control.allow_write off every alerts write is 403 and every read answers."""
    async with alert_daemon(short_tmp, [receiver("hook", "http://127.0.0.1:9/")],
                            allow_write=False) as env:
        for operation, arguments in WRITES.items():
            problem = await env.problem(operation, **arguments)
            assert problem.status == 403 and "allow_write" in problem.detail, operation
        for operation, arguments in READS.items():
            await env.call(operation, **arguments)
        assert (await env.call("alerts.silences"))["silences"] == []


ROLE_SCRIPT = """
import json, sys
from virtmon.ctl.client import ControlClient, Problem
client = ControlClient(sys.argv[1])
out = {}
for op, args in json.loads(sys.argv[2]).items():
    try:
        client.call(op, **args)
        out[op] = 200
    except Problem as exc:
        out[op] = exc.status
print(json.dumps(out))
"""


async def test_writes_need_the_write_role(short_tmp: Path) -> None:
    """A caller with only the read role (uid 65534) reads alerts but gets 403 on every write."""
    os.chmod(short_tmp, 0o755)  # the other uid must reach the socket
    async with alert_daemon(short_tmp, [receiver("hook", "http://127.0.0.1:9/")],
                            socket_mode="0666", read_uids=[65534]) as env:
        proc = await asyncio.create_subprocess_exec(
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
            ROLE_SCRIPT, env.socket, json.dumps({**READS, **WRITES}), cwd=str(ROOT),
            env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out) == {**dict.fromkeys(READS, 200), **dict.fromkeys(WRITES, 403)}
        assert (await env.call("alerts.silences"))["silences"] == []  # nothing was made


def test_operations_are_in_the_table_and_the_openapi_document() -> None:
    """Every alerts operation is routed with its role and documented in OpenAPI."""
    doc = document(OPERATIONS)
    for name, role in {**dict.fromkeys(READS, "read"), **dict.fromkeys(WRITES, "write")}.items():
        assert OPERATIONS[name].role == role
        item = doc["paths"][f"/v1/ops/{name}"]
        assert item["post"]["x-virtmon-role"] == role
        assert ("get" in item) == (role == "read")


def test_durations_and_silence_matching() -> None:
    """Durations parse in s/m/h/d/w; a silence with rule and domain needs both to match."""
    assert parse_duration("90") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    for bad in ("", "h", "1x", "-5", "1h 30m", "400d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    both = Silence(1, "Crash", "web-*", 0.0, 10.0, "", 0.0)
    assert both.matches("Crash", {"domain": "web-1"})
    assert not both.matches("Crash", {"domain": "db-1"})
    assert not both.matches("Other", {"domain": "web-1"})
    assert not Silence(2, None, "web-*", 0.0, 10.0, "", 0.0).matches("Crash", {})
    assert both.active(5.0) and not both.active(10.0)


@pytest.mark.lab
async def test_lab_crash_of_a_silenced_domain_is_listed_not_delivered(
    lab: str, lab_domain: str, short_tmp: Path
) -> None:
    """kill -9 of a silenced lab domain: listed as silenced, not sent; unsilenced, the next is."""
    rec = Recorder()
    async with serving(rec):
        cfg = daemon_config(short_tmp, libvirt={"uri": lab}, control={"allow_write": True},
                            alerts={"receivers": [receiver("hook", rec.url)]})
        async with running_daemon(cfg):
            client = ControlClient(str(short_tmp / "control.sock"))

            async def crashed() -> dict[str, object] | None:
                found = (await asyncio.to_thread(client.call, "alerts.list", state="firing",
                                                 rule="DomainCrashed", domain=lab_domain))
                return found["alerts"][0] if found["alerts"] else None

            made = await asyncio.to_thread(client.call, "alerts.silence", domain=lab_domain,
                                           duration="10m", comment="lab test")
            os.kill(qemu_pid(lab_domain), signal.SIGKILL)
            deadline = time.monotonic() + 30
            while (alert := await crashed()) is None:
                assert time.monotonic() < deadline, "no DomainCrashed alert"
                await asyncio.sleep(0.1)
            assert alert["silenced"] is True and alert["silence_id"] == made["id"]
            # Stored with its deliveries in one transaction: nothing queued, nothing sent. (The
            # default rules stay on: another may fire on the lab's own state and queue its row.)
            rows = (await asyncio.to_thread(client.call, "alerts.outbox"))["rows"]
            assert [r for r in rows if r["fingerprint"] == alert["fingerprint"]] == []
            assert lab_domain not in domains_at(rec)
            conn = await asyncio.to_thread(libvirt.open, lab)
            try:
                await call((await call(conn.lookupByName, lab_domain)).create)
                deadline = time.monotonic() + 30
                while await crashed() is not None:  # resolved by the start
                    assert time.monotonic() < deadline, "not resolved"
                    await asyncio.sleep(0.1)
                await asyncio.to_thread(client.call, "alerts.unsilence", id=made["id"])
                os.kill(qemu_pid(lab_domain), signal.SIGKILL)
                await rec.wait_for(lambda: lab_domain in domains_at(rec), 30)
            finally:
                await call(conn.close)
            assert domains_at(rec, "resolved").count(lab_domain) == 0
