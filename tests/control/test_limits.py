"""Request limits of the control socket, on libvirt's test driver."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tests.conftest import daemon_config, running_daemon
from virtmon.control.client import ControlClient, Problem


async def test_requests_beyond_max_requests_get_503(short_tmp: Path) -> None:
    """With max_requests=1 and a follower holding the slot, the next request is 503."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        control={"max_requests": 1})
    async with running_daemon(cfg):
        client = ControlClient(str(short_tmp / "control.sock"), timeout=10)
        stop = threading.Event()

        def follow() -> None:
            for _line in client.stream("/v1/events", [("follow", "1")]):
                if stop.is_set():
                    return

        follower = asyncio.ensure_future(asyncio.to_thread(follow))
        try:
            for _ in range(100):
                try:
                    await asyncio.to_thread(client.get, "/v1/status")
                except Problem as exc:
                    assert exc.status == 503 and "retry" in exc.detail
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("never refused while the follower held the only slot")
        finally:
            stop.set()
            follower.cancel()
