"""The admin collector: a pure function from AdminStats to the METRICS.md admin families."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from tests.tools import need
from virtmon.admin.stats import AdminStats, ServerStats
from virtmon.collectors.admin import AdminCollectionFailed, AdminCollector
from virtmon.collectors.base import NoData, run_collectors
from virtmon.exposition.family import MetricFamily
from virtmon.exposition.render import render_text

# A reply of the helper's "snapshot" op, as recorded on the lab (ids and pids shortened).
HELPER_SNAPSHOT: dict[str, Any] = {
    "servers": {
        "admin": {
            "threadpool": {"minWorkers": 1, "maxWorkers": 5, "nWorkers": 1, "freeWorkers": 0,
                           "prioWorkers": 0, "jobQueueDepth": 0},
            "client_limits": {"nclients_max": 5000, "nclients": 1, "nclients_unauth_max": 0,
                              "nclients_unauth": 0},
            "clients": [{"id": 5, "timestamp": 1795441625, "transport": "unix",
                         "info": {"readonly": False, "unix_user_id": 0, "unix_process_id": 7}}],
        },
        "libvirtd": {
            "threadpool": {"minWorkers": 5, "maxWorkers": 30, "nWorkers": 6, "freeWorkers": 4,
                           "prioWorkers": 5, "jobQueueDepth": 2},
            "client_limits": {"nclients_max": 200, "nclients": 4, "nclients_unauth_max": 20,
                              "nclients_unauth": 1},
            "clients": [
                {"id": 1, "timestamp": 1, "transport": "unix", "info": {"readonly": True}},
                {"id": 2, "timestamp": 1, "transport": "unix", "info": {"readonly": False}},
                {"id": 3, "timestamp": 1, "transport": "tls", "info": {"readonly": False}},
                {"id": 4, "timestamp": 1, "transport": "unix", "info": {}},
            ],
        },
    }
}


@dataclass(frozen=True)
class Snap:
    """Stands in for a StatsSnapshot carrying the `admin` field."""

    admin: object = None


def by_name(families: list[MetricFamily]) -> dict[str, dict[tuple[str, ...], float]]:
    """Family name to {label values: value}."""
    return {family.name: dict(family.samples) for family in families}


def collect(admin: object) -> dict[str, dict[tuple[str, ...], float]]:
    """Run the collector on a stand-in snapshot."""
    return by_name(AdminCollector().collect(Snap(admin)))  # type: ignore[arg-type]


def test_from_helper_counts_clients_by_transport_and_access() -> None:
    """from_helper builds per-server stats; a client without a readonly flag counts nowhere."""
    stats = AdminStats.from_helper(HELPER_SNAPSHOT)
    libvirtd = next(server for server in stats.servers if server.name == "libvirtd")
    assert libvirtd.clients_by_transport == {"unix": 3, "tls": 1}
    assert (libvirtd.readonly_clients, libvirtd.readwrite_clients) == (1, 2)
    assert libvirtd.threadpool["maxWorkers"] == 30
    assert [server.name for server in stats.servers] == ["admin", "libvirtd"]


def test_every_admin_metric_has_the_right_values() -> None:
    """Each METRICS.md admin family carries the fixture's values for both servers, and the time
    of the read is exported with them."""
    got = collect(AdminStats.from_helper(HELPER_SNAPSHOT, read_at=1765000000.5))
    expected = {
        "libvirt_daemon_threadpool_min_workers": (5, 1),
        "libvirt_daemon_threadpool_max_workers": (30, 5),
        "libvirt_daemon_threadpool_priority_workers": (5, 0),
        "libvirt_daemon_threadpool_free_workers": (4, 0),
        "libvirt_daemon_threadpool_workers": (6, 1),
        "libvirt_daemon_threadpool_job_queue_depth": (2, 0),
        "libvirt_daemon_clients": (4, 1),
        "libvirt_daemon_clients_max": (200, 5000),
        "libvirt_daemon_clients_unauthenticated": (1, 0),
        "libvirt_daemon_clients_unauthenticated_max": (20, 0),
    }
    for name, (libvirtd, admin) in expected.items():
        assert got[name] == {("libvirtd",): libvirtd, ("admin",): admin}, name
    assert got["libvirt_daemon_clients_by_transport"] == {
        ("admin", "unix"): 1, ("admin", "tcp"): 0, ("admin", "tls"): 0,
        ("libvirtd", "unix"): 3, ("libvirtd", "tcp"): 0, ("libvirtd", "tls"): 1,
    }
    assert got["libvirt_daemon_clients_by_access"] == {
        ("admin", "readonly"): 0, ("admin", "readwrite"): 1,
        ("libvirtd", "readonly"): 1, ("libvirtd", "readwrite"): 2,
    }
    assert got["virtmon_admin_last_read_timestamp_seconds"] == {(): 1765000000.5}
    assert set(got) == {*expected, "libvirt_daemon_clients_by_transport",
                        "libvirt_daemon_clients_by_access",
                        "virtmon_admin_last_read_timestamp_seconds"}


def test_every_family_carries_the_time_of_its_reading() -> None:
    """Each admin family says when the helper read it (a threshold rule counts a reading once,
    however many cycles carry it)."""
    families = AdminCollector().collect(
        Snap(AdminStats.from_helper(HELPER_SNAPSHOT, read_at=1765000000.5)))  # type: ignore[arg-type]
    assert families and {family.read_at for family in families} == {1765000000.5}


def test_families_are_gauges_with_help_naming_the_source() -> None:
    """Every family is a gauge whose HELP says how often it is read; libvirt's name the call."""
    stats = AdminStats((ServerStats("libvirtd", {"maxWorkers": 20}, {"nclients": 0}),))
    for family in AdminCollector().collect(Snap(stats)):  # type: ignore[arg-type]
        assert family.type == "gauge"
        assert "every collect.admin_interval seconds" in family.help
        assert "virAdm" in family.help or not family.name.startswith("libvirt_")


def test_missing_parameter_leaves_no_sample() -> None:
    """A typed parameter the daemon did not report yields no sample, not a zero."""
    got = collect(AdminStats((ServerStats("libvirtd", threadpool={"maxWorkers": 20}),)))
    assert got["libvirt_daemon_threadpool_max_workers"] == {("libvirtd",): 20}
    assert got["libvirt_daemon_threadpool_min_workers"] == {}


def test_no_admin_stats_is_no_data_and_a_helper_failure_is_a_failure() -> None:
    """admin=None raises NoData; an exception stored as admin fails the collector alone."""
    with pytest.raises(NoData):
        collect(None)
    with pytest.raises(AdminCollectionFailed):
        collect(RuntimeError("admin helper unavailable"))
    _, outcomes = run_collectors([AdminCollector()], Snap(RuntimeError("x")))  # type: ignore[arg-type]
    assert outcomes[0].success is False and outcomes[0].no_data is False


def test_promtool_finds_nothing_to_report() -> None:
    """`promtool check metrics` reports nothing on the rendered admin families."""
    promtool = need("promtool")
    stats = AdminStats.from_helper(HELPER_SNAPSHOT)
    families = AdminCollector().collect(Snap(stats))  # type: ignore[arg-type]
    done = subprocess.run([promtool, "check", "metrics"], input=render_text(families),
                          capture_output=True, timeout=30)
    assert done.returncode == 0 and done.stdout + done.stderr == b"", done
