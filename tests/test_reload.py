"""virtmon.reload's plan: which changed keys apply at once, which wait for a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import structlog

from tests.conftest import daemon_config, running_daemon
from tests.waiting import wait_until
from virtmon import config
from virtmon.events.journal import Journal
from virtmon.events.model import Event
from virtmon.reload import changed_keys, effective, plan, reload_daemon


def build(**sections: dict[str, Any]) -> config.Config:
    """A valid configuration from a few sections."""
    return config.build(sections)


def test_runtime_keys_apply_and_the_rest_keeps_its_running_value() -> None:
    """interval and log level apply; uri and listen are listed for a restart and keep old values."""
    old = build(collect={"interval": 15.0}, log={"level": "info"})
    new = build(collect={"interval": 5.0}, log={"level": "debug"},
                libvirt={"uri": "test:///default"}, metrics={"listen": "127.0.0.1:9999"})
    result = plan(old, new, admin_running=True)
    assert result.applied == ("collect.interval", "log.level")
    assert result.restart == ("libvirt.uri", "metrics.listen")
    running = effective(old, new, result)
    assert running.collect.interval == 5.0 and running.log.level == "debug"
    assert running.libvirt.uri == old.libvirt.uri and running.metrics == old.metrics


def test_turning_the_admin_collector_on_needs_a_restart_other_collectors_switch() -> None:
    """admin on while no helper runs: restart; vm on applies; admin stays as it was."""
    old = build(collect={"collectors": {"admin": False}})
    new = build(collect={"collectors": {"admin": True, "vm": True}})
    result = plan(old, new, admin_running=False)
    assert result.applied == ("collect.collectors",)
    assert result.restart == ("collect.collectors.admin",)
    assert effective(old, new, result).collect.collectors == {"admin": False, "vm": True}


def test_an_unchanged_file_changes_nothing() -> None:
    """Reloading the same file: no key applied, none waiting for a restart."""
    cfg = build(collect={"interval": 2.0})
    assert changed_keys(cfg, build(collect={"interval": 2.0})) == []
    assert plan(cfg, cfg, admin_running=True).restart == ()


async def test_a_fault_while_reading_the_configuration_rejects_the_reload(
    short_tmp: Path,
) -> None:
    """An unexpected error in virtmon's own reading of the file (a validation bug) refuses the
    reload and keeps the running configuration; the daemon is not ended by it."""
    def broken() -> config.Config:
        raise RuntimeError("a validation bug")

    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"})
    async with running_daemon(cfg) as daemon:
        with structlog.testing.capture_logs() as logs:
            assert await reload_daemon(daemon, broken) is None
        assert daemon.config is cfg and "config reload failed" in str(daemon.config_problem)
        assert [e["event"] for e in logs if e["log_level"] == "error"][:1] == [
            "virtmon.reload.crashed"]
        assert not daemon.finished.is_set()


async def test_retention_applies_at_start_and_at_once_on_reload(short_tmp: Path) -> None:
    """The journal is pruned when the daemon starts (not an hour later: a daemon restarted more
    often than hourly never pruned) and again on every reload, with the reloaded retention."""
    state = short_tmp / "state"
    state.mkdir()
    old = Journal(state / "virtmon.db")
    old.append([Event(time=time.time(), uri="test:///default", kind="lifecycle",
                      name="started", domain="a") for _ in range(50)])
    old.close()
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        events={"retention_count": 5})
    async with running_daemon(cfg) as daemon:
        journal = daemon.journal
        await wait_until(lambda: journal.read_since(0, 1)[0].seq > 45)
        await wait_until(lambda: journal.last_seq > 50)  # the daemon's own events came too
        before = journal.last_seq
        smaller = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                                events={"retention_count": 1},
                                metrics={"listen": cfg.metrics.listen})
        result = await reload_daemon(daemon, lambda: smaller)
        assert result is not None and result.applied == ("events.retention_count",)
        assert journal.read_since(0, 1)[0].seq >= before  # pruned by the reload itself
