"""Console refusals that need no guest: writes off (403) and libvirt not connected (503).

Both are answered before any libvirt call, as problem documents on the WebSocket's opening
request, and audited. (Refusals that need a running guest are in
tests/integration/test_lab_console.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import daemon_config, running_daemon
from tests.waiting import wait_until

# A WebSocket opening request's headers (the answer is read as plain HTTP).
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


async def refusal(sock: Path, domain: str) -> tuple[int, str, dict[str, Any]]:
    """Status, Content-Type and document of the answer to a console request."""
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock))) as s, \
            s.get(f"http://virtmon/v1/domains/{domain}/console", headers=UPGRADE) as answer:
        return answer.status, answer.content_type, await answer.json(content_type=None)


def refused_audits(daemon: Any) -> list[dict[str, Any]]:
    """The audit records of refused console opens."""
    return [e.payload for e in daemon.journal.read_since(0, 10_000)
            if e.kind == "audit" and e.name == "domain.console" and not e.payload["ok"]]


async def test_with_writes_off_a_console_is_403_naming_allow_write(short_tmp: Path) -> None:
    """control.allow_write off: the console, which needs the read-write connection, is 403
    and the detail names the setting; the refusal is audited."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        control={"allow_write": False})
    async with running_daemon(cfg) as daemon:
        status, kind, doc = await refusal(daemon.control_socket, "test")
        assert (status, kind) == (403, "application/problem+json"), doc
        assert "control.allow_write" in doc["detail"], doc
        await wait_until(lambda: bool(refused_audits(daemon)), 10, 0.1)
        assert refused_audits(daemon)[0]["status"] == 403


async def test_with_libvirt_not_connected_a_console_is_503(short_tmp: Path) -> None:
    """libvirtd unreachable: the console is 503 (try again), not a hang or a 500."""
    cfg = daemon_config(short_tmp, control={"allow_write": True}, libvirt={
        "uri": f"test+unix:///default?socket={short_tmp}/absent.sock"})
    async with running_daemon(cfg) as daemon:
        assert not daemon.supervisor.connected
        status, kind, doc = await refusal(daemon.control_socket, "test")
        assert (status, kind) == (503, "application/problem+json"), doc
        assert "not connected" in doc["detail"], doc
