"""Alerts reconciled after a restart: what changed while virtmon was down resolves its alerts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import libvirt

from tests.alerts.receiver import Recorder, serving, wait_until
from tests.conftest import daemon_config, running_daemon

STOPPED = {"name": "TestStopped", "severity": "critical", "summary": "{domain} stopped",
           "match": {"kind": "lifecycle", "name": "stopped"},
           "resolve": {"kind": "lifecycle", "name": "started"}}
GONE_XML = """<domain type='test'><name>reconcile-gone</name><memory>65536</memory>
<os><type>hvm</type></os></domain>"""


def notes(rec: Recorder) -> list[tuple[str, str, dict[str, str]]]:
    """(domain, status, annotations) of every alert the receiver got, in order."""
    return [(a["labels"]["domain"], a["status"], a["annotations"])
            for r in rec.requests for a in r.json()["alerts"]]


async def test_a_restart_resolves_alerts_of_domains_started_or_deleted_meanwhile(
        short_tmp: Path) -> None:
    """Two domains stopped (alerts firing), virtmon stopped; one started, the other undefined;
    virtmon started again: both alerts resolve (by the journaled synthetic "started", and as
    gone), and a new stop of the first fires anew instead of counting as a repeat."""
    conn: Any = await asyncio.to_thread(libvirt.open, "test:///default")  # keeps the driver
    test = await asyncio.to_thread(conn.lookupByName, "test")
    gone = await asyncio.to_thread(conn.defineXML, GONE_XML)
    await asyncio.to_thread(gone.create)
    try:
        async with serving(Recorder()) as rec:
            cfg = daemon_config(
                short_tmp, libvirt={"uri": "test:///default"},
                collect={"interval": 1.0, "collectors": {"admin": False}},
                alerts={"default_rules": False, "rules": [STOPPED], "resolve_after": 1.0,
                        "receivers": [{"name": "hook", "kind": "json", "urls": [rec.url],
                                       "batch_size": 1}]})
            async with running_daemon(cfg) as daemon:
                await asyncio.to_thread(test.destroy)
                await asyncio.to_thread(gone.destroy)
                await wait_until(lambda: len(notes(rec)) == 2)
            assert {(d, s) for d, s, _ in notes(rec)} == {
                ("test", "firing"), ("reconcile-gone", "firing")}
            await asyncio.to_thread(test.create)
            await asyncio.to_thread(gone.undefine)
            async with running_daemon(cfg) as daemon:
                await wait_until(lambda: len(notes(rec)) == 4)
                resolved = {d: a for d, s, a in notes(rec)[2:] if s == "resolved"}
                assert set(resolved) == {"test", "reconcile-gone"}
                assert "resolved_reason" not in resolved["test"]  # by its rule's event
                assert resolved["reconcile-gone"]["resolved_reason"] == \
                    "domain reconcile-gone no longer exists"
                started = [e for e in daemon.journal.iter_all()
                           if e.domain == "test" and e.name == "started"]
                assert started[-1].synthetic is True
                await asyncio.to_thread(test.destroy)
                await wait_until(lambda: len(notes(rec)) == 5)
                assert notes(rec)[4][:2] == ("test", "firing")
    finally:
        if not await asyncio.to_thread(test.isActive):
            await asyncio.to_thread(test.create)
        await asyncio.to_thread(conn.close)
