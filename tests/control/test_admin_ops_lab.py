"""Admin operations through the control socket reach the real libvirtd (seen by virt-admin)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import virt_admin, virt_admin_table
from tests.conftest import daemon_config, running_daemon
from tests.lab.close_watcher import close_watcher
from virtmon.ctl.client import ControlClient, Problem

pytestmark = pytest.mark.lab


@pytest.fixture
async def client(short_tmp: Path, lab: str) -> AsyncIterator[ControlClient]:
    """A client of a daemon on the lab (allow_write does not matter to admin operations)."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab})
    async with running_daemon(cfg):
        yield ControlClient(str(short_tmp / "control.sock"), timeout=30)


async def op(client: ControlClient, name: str, **args: Any) -> Any:
    """One operation's result, from a worker thread."""
    return await asyncio.to_thread(client.call, name, **args)


async def test_threadpool_set_shows_in_virt_admin(client: ControlClient) -> None:
    """admin.threadpool_set changes what virt-admin srv-threadpool-info reports; restored."""
    original = await op(client, "admin.threadpool_get", server="libvirtd")
    try:
        await op(client, "admin.threadpool_set", server="libvirtd",
                 params={"maxWorkers": original["maxWorkers"] + 3})
        shown = await asyncio.to_thread(virt_admin_table, "srv-threadpool-info", "libvirtd")
        assert shown["maxWorkers"] == str(original["maxWorkers"] + 3)
        again = await op(client, "admin.threadpool_get", server="libvirtd")
        assert again["maxWorkers"] == original["maxWorkers"] + 3
    finally:
        await op(client, "admin.threadpool_set", server="libvirtd",
                 params={"maxWorkers": original["maxWorkers"]})
    shown = await asyncio.to_thread(virt_admin_table, "srv-threadpool-info", "libvirtd")
    assert shown["maxWorkers"] == str(original["maxWorkers"])


async def test_admin_errors(client: ControlClient) -> None:
    """Unknown server is 404 (VIR_ERR_NO_SERVER); a bad thread-pool value is a 4xx, never 5xx."""
    with pytest.raises(Problem) as caught:
        await op(client, "admin.threadpool_get", server="no-such-server")
    assert caught.value.status == 404
    assert caught.value.document["libvirt_error"] == "VIR_ERR_NO_SERVER"
    with pytest.raises(Problem) as caught:
        await op(client, "admin.threadpool_set", server="libvirtd",
                 params={"minWorkers": 1000, "maxWorkers": 1})
    assert 400 <= caught.value.status < 500


async def test_client_disconnect_through_the_api(client: ControlClient) -> None:
    """admin.client_disconnect closes another process's libvirt connection (callback fires)."""
    async with close_watcher("qemu:///system") as watcher:
        proc = watcher.process
        clients = await op(client, "admin.clients", server="libvirtd", info=True)
        mine = [c for c in clients if c["info"].get("unix_process_id") == proc.pid]
        assert len(mine) == 1
        info = await op(client, "admin.client_info", server="libvirtd", id=mine[0]["id"])
        assert info["unix_process_id"] == proc.pid
        await op(client, "admin.client_disconnect", server="libvirtd", id=mine[0]["id"])
        assert (await watcher.closed()).startswith(b"closed")
        after = await op(client, "admin.clients", server="libvirtd")
        assert mine[0]["id"] not in [c["id"] for c in after]
        listing = await asyncio.to_thread(virt_admin, "srv-clients-list", "libvirtd")
        assert f" {mine[0]['id']} " not in listing


async def test_limits_and_logging_filters_set_show_in_virt_admin(client: ControlClient) -> None:
    """admin.limits_set and admin.logging_filters_set change what virt-admin reports; restored."""
    limits = await op(client, "admin.limits_get", server="libvirtd")
    filters = await op(client, "admin.logging_filters_get")
    try:
        await op(client, "admin.limits_set", server="libvirtd",
                 params={"nclients_max": limits["nclients_max"] + 7})
        shown = await asyncio.to_thread(virt_admin_table, "srv-clients-info", "libvirtd")
        assert shown["nclients_max"] == str(limits["nclients_max"] + 7)
        await op(client, "admin.logging_filters_set", filters="3:remote 4:event")
        listed = await asyncio.to_thread(virt_admin, "daemon-log-filters")
        ours = await op(client, "admin.logging_filters_get")
        assert ours in listed  # libvirt writes them back as 3:*remote* 4:*event*
        assert [f.split(":")[0] for f in ours.split()] == ["3", "4"]
        assert "remote" in ours and "event" in ours
    finally:
        await op(client, "admin.limits_set", server="libvirtd",
                 params={"nclients_max": limits["nclients_max"]})
        await op(client, "admin.logging_filters_set", filters=filters or "")
    shown = await asyncio.to_thread(virt_admin_table, "srv-clients-info", "libvirtd")
    assert shown["nclients_max"] == str(limits["nclients_max"])
    assert await op(client, "admin.logging_filters_get") == filters
