"""The admin helper inside the daemon: its events reach the stream, and a killed one comes back."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import daemon_config, running_daemon
from tests.lab import lab as lab_module
from tests.streamclient import follow, get_json

pytestmark = pytest.mark.lab


async def test_kill_9_of_the_admin_helper_is_an_event_and_metrics_resume(
    lab: str, short_tmp: Path
) -> None:
    """kill -9 of the helper: died/started events in the stream, admin metrics come back."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            follow(daemon.control_socket, "kind=admin") as stream:
        helper = daemon.admin_helper
        assert helper is not None and helper.pid is not None
        first = helper.pid
        os.kill(first, signal.SIGKILL)
        died = await stream.wait_for(lambda e: e["name"] == "helper_died")
        assert died["payload"]["returncode"] == -signal.SIGKILL
        started = await stream.wait_for(lambda e: e["name"] == "helper_started")
        assert started["payload"]["pid"] != first
        for _ in range(20):
            await daemon.scheduler.wait_cycle()
            text = daemon.scheduler.exposition.text.decode()
            if 'virtmon_collector_success{collector="admin"} 1' in text:
                break
        assert 'libvirt_daemon_threadpool_max_workers{server="libvirtd"}' in text
        status = await get_json(daemon.control_socket, "/v1/status")
        assert status["libvirt"]["state"] == "connected"  # nothing else was touched
