"""Settings changed by virt-admin are seen by the helper, and the other way round.

Each test restores the daemon's original value through the helper, even when it fails.
"""

from __future__ import annotations

import libvirt
import pytest

from tests.admin.conftest import virt_admin, virt_admin_table
from virtmon.admin.client import AdminError, AdminHelper
from virtmon.admin.stats import AdminStats
from virtmon.collectors.admin import AdminCollector

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab")]


async def snapshot_stats(helper: AdminHelper) -> AdminStats:
    """The helper's snapshot as the collector's input."""
    return AdminStats.from_helper(await helper.request("snapshot"))


class Snap:
    """Just the `admin` attribute of a StatsSnapshot, for the collector."""

    def __init__(self, admin: AdminStats) -> None:
        self.admin = admin


def metric(stats: AdminStats, name: str, labels: tuple[str, ...]) -> float:
    """One sample value of the admin collector's output."""
    for family in AdminCollector().collect(Snap(stats)):  # type: ignore[arg-type]
        if family.name == name:
            return dict(family.samples)[labels]
    raise KeyError(name)


def filters(text: str) -> list[str]:
    """Filters without the glob stars libvirt adds (it stores ``1:util`` as ``1:*util*``)."""
    return [item.replace("*", "") for item in text.split()]


async def test_threadpool_both_ways() -> None:
    """virt-admin --max-workers 30 shows in the snapshot; a helper set shows in virt-admin."""
    async with AdminHelper() as helper:
        original = await helper.request("threadpool_get", {"server": "libvirtd"})
        try:
            virt_admin("srv-threadpool-set", "libvirtd", "--max-workers", "30")
            stats = await snapshot_stats(helper)
            assert metric(stats, "libvirt_daemon_threadpool_max_workers", ("libvirtd",)) == 30
            await helper.request("threadpool_set",
                                 {"server": "libvirtd", "params": {"maxWorkers": 27}})
            assert virt_admin_table("srv-threadpool-info", "libvirtd")["maxWorkers"] == "27"
        finally:
            await helper.request("threadpool_set", {
                "server": "libvirtd", "params": {"maxWorkers": original["maxWorkers"]}})
        assert virt_admin_table("srv-threadpool-info", "libvirtd")["maxWorkers"] == str(
            original["maxWorkers"])


async def test_client_limits_both_ways() -> None:
    """virt-admin --max-clients shows in the snapshot; a helper set shows in virt-admin."""
    async with AdminHelper() as helper:
        original = await helper.request("client_limits_get", {"server": "libvirtd"})
        try:
            virt_admin("srv-clients-set", "libvirtd", "--max-clients", "150")
            stats = await snapshot_stats(helper)
            assert metric(stats, "libvirt_daemon_clients_max", ("libvirtd",)) == 150
            await helper.request("client_limits_set", {
                "server": "libvirtd", "params": {"nclients_max": 180, "nclients_unauth_max": 15}})
            info = virt_admin_table("srv-clients-info", "libvirtd")
            assert (info["nclients_max"], info["nclients_unauth_max"]) == ("180", "15")
        finally:
            await helper.request("client_limits_set", {"server": "libvirtd", "params": {
                "nclients_max": original["nclients_max"],
                "nclients_unauth_max": original["nclients_unauth_max"]}})
        info = virt_admin_table("srv-clients-info", "libvirtd")
        assert info["nclients_max"] == str(original["nclients_max"])


async def test_logging_filters_both_ways() -> None:
    """virt-admin daemon-log-filters is read by the helper; a helper set is read by virt-admin."""
    async with AdminHelper() as helper:
        original = await helper.request("logging_filters_get")
        try:
            virt_admin("daemon-log-filters", "--filters", "1:util.pci")
            assert filters(await helper.request("logging_filters_get")) == ["1:util.pci"]
            await helper.request("logging_filters_set", {"filters": "3:rpc 4:event"})
            shown = virt_admin("daemon-log-filters").split(":", 1)[1]
            assert filters(shown) == ["3:rpc", "4:event"]
        finally:
            await helper.request("logging_filters_set", {"filters": original})
        assert await helper.request("logging_filters_get") == original


async def test_logging_outputs_both_ways() -> None:
    """A second output set through the helper is listed by virt-admin; restored after."""
    async with AdminHelper() as helper:
        original = (await helper.request("logging_outputs_get")).strip()
        extra = "4:file:/var/log/libvirt/virtmon-lab-outputs-test.log"
        try:
            await helper.request("logging_outputs_set", {"outputs": f"{original} {extra}"})
            shown = virt_admin("daemon-log-outputs").split(":", 1)[1].split()
            assert shown == [*original.split(), extra]
            assert (await helper.request("logging_outputs_get")).split() == shown
        finally:
            await helper.request("logging_outputs_set", {"outputs": original})
        assert virt_admin("daemon-log-outputs").split(":", 1)[1].strip() == original


async def test_daemon_timeout_and_tls_reload_answer() -> None:
    """daemon_timeout_set 0 (no timeout, the lab's setting) succeeds; TLS reload on a daemon
    without a TLS service is libvirt's own "no tls service" error, nothing else."""
    async with AdminHelper() as helper:
        assert await helper.request("daemon_timeout_set", {"timeout": 0}) is None
        with pytest.raises(AdminError) as caught:
            await helper.request("tls_files_update", {"server": "libvirtd"})
        assert caught.value.code == libvirt.VIR_ERR_INTERNAL_ERROR
        assert "no tls service found" in caught.value.message
