"""Against a real two-peer Alertmanager cluster: a daemon's alert shows on both peers, resolves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import libvirt

from tests.alerts import alertmanager
from tests.conftest import daemon_config, running_daemon

STOPPED_RULE = {"name": "TestDomainStopped", "severity": "critical",
                "summary": "{domain} stopped ({detail})",
                "match": {"kind": "lifecycle", "name": "stopped", "domain": "test"},
                "resolve": {"kind": "lifecycle", "name": "started"}}


def ours(url: str) -> list[dict[str, Any]]:
    """Active alerts of our rule on one peer."""
    return [a for a in alertmanager.get_alerts(url)
            if a["labels"].get("alertname") == "TestDomainStopped"]


async def poll(predicate: Any, timeout: float) -> float:
    """Wait (bounded) until predicate() holds in a thread; return the seconds it took."""
    started = time.monotonic()
    while not await asyncio.to_thread(predicate):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_alert_reaches_every_peer_and_resolves(short_tmp: Path) -> None:
    """Domain stopped on the test driver: firing on both Alertmanager peers, then resolved."""
    with alertmanager.cluster(short_tmp) as urls:
        cfg = daemon_config(
            short_tmp, libvirt={"uri": "test:///default"},
            collect={"interval": 1.0, "collectors": {"admin": False}},
            alerts={"default_rules": False, "rules": [STOPPED_RULE], "receivers": [
                {"name": "am", "kind": "alertmanager", "urls": urls, "resend_interval": 2.0}]})
        async with running_daemon(cfg) as daemon:
            conn = await asyncio.to_thread(libvirt.open, "test:///default")
            dom = await asyncio.to_thread(conn.lookupByName, "test")
            try:
                await asyncio.to_thread(dom.destroy)
                latency = await poll(lambda: all(ours(u) for u in urls), 20)
                for url in urls:
                    [alert] = ours(url)
                    assert alert["labels"]["domain"] == "test"
                    assert alert["labels"]["severity"] == "critical"
                    assert alert["annotations"]["summary"] == "test stopped (destroyed)"
                    assert alert["status"]["state"] == "active"
                    assert alert["generatorURL"].startswith("http://")
                query = await asyncio.to_thread(alertmanager.amtool_query, urls[1],
                                                "alertname=TestDomainStopped")
                assert "test stopped (destroyed)" in query
                # Re-sent while firing (resend_interval 2 s): re-sends reach both peers, and
                # the alert stays active all the while.
                await poll(lambda: all(t.outcomes["resent"] >= 1
                                       for t in daemon.alerts.targets), 30)
                assert all(ours(u) for u in urls)
                await asyncio.to_thread(dom.create)
                await poll(lambda: not any(ours(u) for u in urls), 20)
            finally:
                if not await asyncio.to_thread(dom.isActive):
                    await asyncio.to_thread(dom.create)
                await asyncio.to_thread(conn.close)
            outcomes = {t.url: dict(t.outcomes) for t in daemon.alerts.targets}
    assert all(o.get("delivered") == 2 for o in outcomes.values()), outcomes
    print(f"event -> visible on both Alertmanager peers in {latency * 1000:.0f} ms")
