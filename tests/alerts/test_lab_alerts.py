"""End to end on the lab: kill -9 of a domain's QEMU raises DomainCrashed; a start resolves it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import libvirt
import pytest

from tests.alerts import alertmanager
from tests.alerts.receiver import Recorder, serving
from tests.conftest import call, daemon_config, running_daemon
from tests.integration.test_lab_events import qemu_pid
from tests.lab import lab as lab_module

pytestmark = pytest.mark.lab


def crash_alerts(rec: Recorder, domain: str, status: str) -> list[dict[str, object]]:
    """DomainCrashed alerts of one domain with one status among the json documents received."""
    return [a for r in rec.requests for a in r.json()["alerts"]
            if a["rule"] == "DomainCrashed" and a["labels"].get("domain") == domain
            and a["status"] == status]


async def test_kill_9_of_qemu_alerts_and_start_resolves(
    lab: str, lab_domain: str, short_tmp: Path
) -> None:
    """QEMU SIGKILLed: a DomainCrashed alert at the receiver and on both peers of a two-peer
    Alertmanager cluster (amtool sees it); a start resolves it everywhere."""
    with alertmanager.cluster(short_tmp, peers=2) as am_urls:
        async with serving(Recorder()) as rec:
            cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI},
                                alerts={"receivers": [
                                    {"name": "hook", "kind": "json", "urls": [rec.url]},
                                    {"name": "am", "kind": "alertmanager", "urls": am_urls}]})
            async with running_daemon(cfg):
                killed = time.monotonic()
                os.kill(qemu_pid(lab_domain), signal.SIGKILL)
                await rec.wait_for(lambda: bool(crash_alerts(rec, lab_domain, "firing")), 30)
                latency = time.monotonic() - killed
                [firing] = crash_alerts(rec, lab_domain, "firing")
                assert firing["labels"]["severity"] == "critical"  # type: ignore[index]
                assert lab_domain in firing["annotations"]["summary"]  # type: ignore[index]

                def on_am(url: str) -> bool:
                    return any(a["labels"].get("domain") == lab_domain
                               for a in alertmanager.get_alerts(url)
                               if a["labels"]["alertname"] == "DomainCrashed")

                def on_both() -> bool:
                    return all(on_am(url) for url in am_urls)

                def on_neither() -> bool:
                    return not any(on_am(url) for url in am_urls)

                deadline = time.monotonic() + 20
                while not await asyncio.to_thread(on_both):
                    assert time.monotonic() < deadline, "not on both Alertmanager peers"
                    await asyncio.sleep(0.1)
                for url in am_urls:
                    query = await asyncio.to_thread(alertmanager.amtool_query, url,
                                                    "alertname=DomainCrashed")
                    assert lab_domain in query
                conn = await asyncio.to_thread(libvirt.open, lab)
                try:
                    dom = await call(conn.lookupByName, lab_domain)
                    await call(dom.create)
                finally:
                    await call(conn.close)
                await rec.wait_for(lambda: bool(crash_alerts(rec, lab_domain, "resolved")), 30)
                deadline = time.monotonic() + 20
                while not await asyncio.to_thread(on_neither):
                    assert time.monotonic() < deadline, "not resolved on both peers"
                    await asyncio.sleep(0.1)
    print(f"kill -9 -> alert at the receiver in {latency * 1000:.0f} ms")
