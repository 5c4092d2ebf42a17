"""The control surface beyond the operations: no route for a caller without a role, none on TCP.

On libvirt's test driver; callers with uids of their own (tests/control/peers.py).
"""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import daemon_config, running_daemon
from tests.control.peers import probe, unused_ids
from virtmon.ctl.client import ControlClient

ROUTES = ["/v1/status", "/v1/domains", "/v1/domains/test", "/v1/events?since=0&follow=0",
          "/v1/ops", "/v1/openapi.json", "/v1/ops/host.info", "/v1/ops/domain.info?domain=test"]


async def test_a_caller_without_a_role_gets_403_on_every_route(short_tmp: Path) -> None:
    """A uid in no role list reads nothing (status, domains, events, the operation list, the
    OpenAPI document, any operation) while a read uid on the same socket reads them all."""
    os.chmod(short_tmp, 0o755)
    outsider, reader = unused_ids(2)
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        control={"socket_mode": "0666", "read_uids": [reader]})
    async with running_daemon(cfg):
        sock = short_tmp / "control.sock"
        requests = [{"get": route} for route in ROUTES if "events" not in route]
        refused = await asyncio.to_thread(probe, sock, outsider, [{"get": r} for r in ROUTES])
        allowed = await asyncio.to_thread(probe, sock, reader, requests)
    assert [a["status"] for a in refused] == [403] * len(ROUTES)
    assert all("has no role" in a["document"]["detail"] for a in refused)
    assert [a["status"] for a in allowed] == [200] * len(requests)


async def test_the_metrics_listener_serves_no_control_route(short_tmp: Path) -> None:
    """Over TCP (the /metrics listener) every control route is 404, GET or POST, while the same
    daemon answers them on its Unix socket."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        control={"allow_write": True})
    async with running_daemon(cfg) as daemon:
        base = f"http://{daemon.config.metrics.listen}"
        answers = {}
        for route in ROUTES:
            for method in ("GET", "POST"):
                answers[(method, route)] = await asyncio.to_thread(_status, base + route, method)
        metrics = await asyncio.to_thread(_status, base + "/metrics", "GET")
        on_socket = await asyncio.to_thread(
            ControlClient(str(short_tmp / "control.sock")).call, "host.info")
    assert {key: status for key, status in answers.items() if status != 404} == {}
    assert metrics == 200 and on_socket["cpus"] > 0


def _status(url: str, method: str) -> int:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
