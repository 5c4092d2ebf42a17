"""Against a real Alertmanager: a daemon's alert shows on both peers of a cluster and resolves;
a retried dead letter never revives a resolved alert."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import anyio
import libvirt
from aiohttp import ClientSession, web

from tests.alerts import alertmanager
from tests.conftest import daemon_config, running_daemon
from tests.daemon import free_port
from virtmon.alerts.delivery import Target
from virtmon.alerts.model import Alert, Notification
from virtmon.alerts.store import AlertStore
from virtmon.config import Receiver

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


def alert_of(domain: str, now: float, resolved: bool = False) -> tuple[Alert, Notification]:
    """A DomainCrashed-like alert of one domain and the notification of its state."""
    alert = Alert(rule="Crash", labels={"alertname": "RetryProbe", "domain": domain},
                  annotations={}, state="firing", starts_at=now - 10)
    if resolved:
        alert = alert.resolved(now)
    return alert, Notification.of(alert, now)


async def test_retried_dead_letters_never_revive_a_resolved_alert(short_tmp: Path) -> None:
    """Firing refused (400) and dead-lettered, its resolve delivered, then every dead letter
    retried: Alertmanager keeps the alert resolved (the stale firing made it active again)."""
    with alertmanager.cluster(short_tmp, peers=1) as [am]:
        answers = iter([400])

        async def gate(request: web.Request) -> web.Response:
            """The first request is refused; the others are passed on to Alertmanager."""
            body = await request.read()
            status = next(answers, None)
            if status is not None:
                return web.Response(status=status, text="refused once")
            async with ClientSession() as session, session.post(
                    f"{am}/api/v2/alerts", data=body,
                    headers={"Content-Type": "application/json"}) as answer:
                return web.Response(status=answer.status, body=await answer.read())

        app = web.Application()
        app.router.add_post("/api/v2/alerts", gate)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}"
        store = AlertStore(short_tmp / "virtmon.db")
        target = Target(Receiver(name="am", kind="alertmanager", urls=(url,), batch_size=1,
                                 resend_interval=300.0), url, store, "hv1")

        def probes(domain: str) -> list[dict[str, Any]]:
            return [a for a in alertmanager.get_alerts(am)
                    if a["labels"] == {"alertname": "RetryProbe", "domain": domain}]

        async with anyio.create_task_group() as group:
            group.start_soon(target.run)
            now = time.time()
            firing, firing_note = alert_of("d0", now)
            store.apply([firing], [firing_note], [("am", url)], now)
            target.kick()
            await poll(lambda: target.outcomes["dead"] == 1, 20)
            resolved, resolved_note = alert_of("d0", now, resolved=True)
            store.apply([resolved], [resolved_note], [("am", url)], time.time())
            target.kick()
            await poll(lambda: target.outcomes["delivered"] == 1, 20)
            assert store.retry_dead(None, time.time()) == (0, 1)
            # Sent after anything the retry queued: once Alertmanager has it, a revived firing
            # of d0 would be there too.
            control, control_note = alert_of("d1", time.time())
            store.apply([control], [control_note], [("am", url)], time.time())
            target.kick()
            await poll(lambda: bool(probes("d1")), 20)
            assert probes("d0") == []
            group.cancel_scope.cancel()
        store.close()
        await runner.cleanup()


async def test_over_a_thousand_firing_alerts_stay_active_on_both_peers_across_resends(
        short_tmp: Path) -> None:
    """1,011 firing alerts on a two-peer cluster stay active on both peers past the endsAt of
    their first delivery (4 resend intervals): every re-send round reaches all of them (it read
    1,000, and 11 expired in Alertmanager while still firing)."""
    count, interval = 1011, 1.5
    with alertmanager.cluster(short_tmp) as urls:
        store = AlertStore(short_tmp / "virtmon.db")
        now = time.time()
        pairs = [alert_of(f"d{i}", now) for i in range(count)]
        store.apply([a for a, _ in pairs], [n for _, n in pairs], [("am", u) for u in urls], now)
        targets = [Target(Receiver(name="am", kind="alertmanager", urls=tuple(urls),
                                   batch_size=500, resend_interval=interval), url, store, "hv1")
                   for url in urls]

        def probes(url: str) -> int:
            return sum(a["labels"].get("alertname") == "RetryProbe"
                       for a in alertmanager.get_alerts(url))

        async with anyio.create_task_group() as group:
            for target in targets:
                group.start_soon(target.run)
            await poll(lambda: all(probes(u) == count for u in urls), 30)
            delivered = time.monotonic()
            # Past the first delivery's endsAt (now + 4 x interval), with three re-send rounds
            # (3 requests each) done on both peers.
            await poll(lambda: time.monotonic() - delivered > 4 * interval + 1
                       and all(t.outcomes["resent"] >= 9 for t in targets), 60)
            assert [probes(u) for u in urls] == [count, count]
            group.cancel_scope.cancel()
        store.close()
