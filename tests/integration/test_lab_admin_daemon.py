"""The admin helper inside the daemon: its events reach the stream, and a killed one comes back."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import structlog

from tests.admin.conftest import virt_admin
from tests.conftest import daemon_config, running_daemon
from tests.lab import lab as lab_module
from tests.streamclient import follow, get_json
from tests.waiting import exposition_until, fresh_cycle, wait_until
from virtmon import app
from virtmon.admin.client import AdminHelper

pytestmark = pytest.mark.lab


async def test_kill_9_of_the_admin_helper_is_an_event_and_metrics_resume(
    lab: str, short_tmp: Path
) -> None:
    """kill -9 of the helper: died/started events in the stream, and admin metrics again, read
    from the new helper (their read time is after it started; it is asked every cycle here)."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI},
                        collect={"interval": 1.0, "admin_interval": 1.0})
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
        await fresh_cycle(daemon.scheduler)  # one that began after the new helper started
        text = await exposition_until(
            daemon.scheduler, lambda text: 'virtmon_collector_success{collector="admin"} 1' in text)
        assert 'libvirt_daemon_threadpool_max_workers{server="libvirtd"}' in text
        read_at = re.search(r"^virtmon_admin_last_read_timestamp_seconds (\S+)$", text,
                            re.MULTILINE)
        assert read_at is not None and float(read_at.group(1)) >= started["time"]
        status = await get_json(daemon.control_socket, "/v1/status")
        assert status["libvirt"]["state"] == "connected"  # nothing else was touched


async def test_a_helper_without_access_fails_only_the_admin_collector(
    lab: str, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper that may not open the admin socket (a non-root user): the admin collector fails
    with libvirt's permission error in the log and its success metric at 0; all else works."""
    non_root = ["setpriv", "--reuid=virtmon-lab", "--regid=virtmon-lab", "--clear-groups",
                sys.executable, "-m", "virtmon.admin.helper"]
    monkeypatch.setattr(app, "AdminHelper", functools.partial(AdminHelper, command=non_root))
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    with structlog.testing.capture_logs() as logs:
        async with running_daemon(cfg) as daemon:
            # Until a cycle reads libvirt in time on a loaded machine, libvirt_up may be 0.
            text = await exposition_until(daemon.scheduler, lambda text: "libvirt_up 1" in text)
            status = await get_json(daemon.control_socket, "/v1/status")
    assert 'virtmon_collector_success{collector="admin"} 0' in text
    assert 'virtmon_collector_success{collector="state"} 1' in text
    assert "libvirt_up 1" in text and 'libvirt_domain_info_state{domain="lab-0"}' in text
    assert "libvirt_daemon_threadpool_max_workers" not in text
    assert status["libvirt"]["state"] == "connected"
    failures = [e for e in logs if e["event"] == "virtmon.collector.failed"
                and e.get("collector") == "admin"]
    assert failures and "Permission denied" in failures[0]["error"]


def exported_max_workers(text: str) -> int:
    """libvirtd's maxWorkers as the exposition shows it."""
    match = re.search(r'^libvirt_daemon_threadpool_max_workers\{server="libvirtd"\} (\d+)', text,
                      re.MULTILINE)
    assert match is not None, "no libvirtd thread pool series"
    return int(match.group(1))


async def test_admin_series_are_read_every_admin_interval_and_carried_between(
    lab: str, short_tmp: Path
) -> None:
    """With collect.admin_interval far above the cycle, the cycles carry the admin values read
    first (a thread pool change stays unseen) and count the collector a success; a reload that
    lowers it makes the next cycles read the change."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI},
                        collect={"interval": 1.0, "admin_interval": 3600.0})
    async with running_daemon(cfg) as daemon:
        scheduler = daemon.scheduler
        first = exported_max_workers(scheduler.exposition.text.decode())
        await asyncio.to_thread(virt_admin, "srv-threadpool-set", "libvirtd",
                                "--max-workers", str(first + 11))
        try:
            for _ in range(3):
                await fresh_cycle(scheduler)
                text = scheduler.exposition.text.decode()
                assert exported_max_workers(text) == first
                assert 'virtmon_collector_success{collector="admin"} 1' in text
            await scheduler.reconfigure(dataclasses.replace(cfg.collect, admin_interval=0.5))
            await exposition_until(scheduler, lambda text: exported_max_workers(text) == first + 11)
        finally:
            await asyncio.to_thread(virt_admin, "srv-threadpool-set", "libvirtd",
                                    "--max-workers", str(first))


async def test_a_carried_admin_reading_counts_once_for_a_threshold_rule(
    lab: str, short_tmp: Path
) -> None:
    """A two-reading rule that libvirtd's thread pool always meets does not fire while one
    admin reading is carried over many one-second cycles; read every half second, it fires."""
    rule = {"name": "PoolSeen", "metric": "libvirt_daemon_threadpool_max_workers", "op": ">",
            "value": 0, "for_cycles": 2, "summary": "{labels[server]}"}
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI},
                        collect={"interval": 1.0, "admin_interval": 3600.0},
                        alerts={"default_rules": False, "rules": [rule]})
    async with running_daemon(cfg) as daemon:
        scheduler, engine = daemon.scheduler, daemon.alerts.engine

        def fired() -> set[str]:
            return {a.labels["server"] for a in engine.active.values() if a.rule == "PoolSeen"}

        for _ in range(5):
            await fresh_cycle(scheduler)
        await fresh_cycle(scheduler)  # the evaluations of the cycles before have run
        assert fired() == set()
        await scheduler.reconfigure(dataclasses.replace(cfg.collect, admin_interval=0.5))
        await wait_until(lambda: fired() == {"libvirtd", "admin"}, 30)
