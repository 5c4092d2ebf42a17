"""virtmon.reload's plan: which changed keys apply at once, which wait for a restart."""

from __future__ import annotations

import ast
import logging
import time
from pathlib import Path
from typing import Any

import structlog

from tests.conftest import daemon_config, running_daemon
from tests.waiting import wait_until
from virtmon import config, configfile, logsetup
from virtmon.app import status_line
from virtmon.events.journal import Journal
from virtmon.events.model import Event
from virtmon.reload import changed_keys, effective, plan, reload_daemon

ROOT = Path(__file__).resolve().parents[1]


def build(**sections: dict[str, Any]) -> config.Config:
    """A valid configuration from a few sections."""
    return configfile.build(sections)


def build_like(running: config.Config, **sections: dict[str, Any]) -> config.Config:
    """``running`` with some keys changed, validated as a file is."""
    document = running.document()
    for section, values in sections.items():
        document[section].update(values)
    return configfile.build(document)


def test_runtime_keys_apply_and_the_rest_keeps_its_running_value() -> None:
    """interval and log level apply; uri and listen are listed for a restart and keep old values."""
    old = build(collect={"interval": 15.0}, log={"level": "info"})
    new = build(collect={"interval": 5.0}, log={"level": "debug"},
                libvirt={"uri": "test:///default"}, metrics={"listen": "127.0.0.1:9999"})
    result = plan(old, new)
    assert result.applied == ("collect.interval", "log.level")
    assert result.restart == ("libvirt.uri", "metrics.listen")
    running = effective(old, new, result)
    assert running.collect.interval == 5.0 and running.log.level == "debug"
    assert running.libvirt.uri == old.libvirt.uri and running.metrics == old.metrics


async def test_turning_the_admin_collector_on_needs_a_restart_other_collectors_switch(
    short_tmp: Path,
) -> None:
    """admin on while no helper runs: the scheduler answers it needs a restart and keeps it
    off; vm on applies; the running configuration says so."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        collect={"collectors": {"admin": False}})
    async with running_daemon(cfg) as daemon:
        new = build_like(cfg, collect={"collectors": {"admin": True, "vm": True}})
        result = await reload_daemon(daemon, lambda: new)
        assert result is not None and result.applied == ("collect.collectors",)
        assert result.restart == ("collect.collectors.admin",)
        assert daemon.config.collect.collectors == {"admin": False, "vm": True}
        names = {collector.name for collector in daemon.scheduler.collectors}
        assert "vm" in names and "admin" not in names


def test_an_unchanged_file_changes_nothing() -> None:
    """Reloading the same file: no key applied, none waiting for a restart."""
    cfg = build(collect={"interval": 2.0})
    assert changed_keys(cfg, build(collect={"interval": 2.0})) == []
    assert plan(cfg, cfg).restart == ()


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


async def test_every_reloadable_key_is_applied_inside_its_component(short_tmp: Path) -> None:
    """A reload that changes every reloadable key applies each one (nothing waits for a
    restart), and each shows in the component that owns it: scheduler, domain cache, journal,
    log, alerts, the guest-agent poller and the control API's executor. A key declared
    reloadable that no component applies fails here."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        collect={"guest_agent": True})
    changes: dict[str, dict[str, Any]] = {
        "collect": {"interval": 0.5, "deadline_ratio": 0.5, "collectors": {"vm": True},
                    "resync_interval": 42.0, "block_backing_chain": True, "admin_interval": 9.0,
                    "guest_agent_interval": 7.0, "guest_agent_timeout": 3.0},
        "events": {"retention_days": 2.0, "retention_count": 1234},
        "log": {"level": "warning"},
        "control": {"migration_destinations": {"peer": "qemu+tcp://peer.example/system"},
                    "migration_timeout": 60.0},
        "alerts": {"rules": [{"name": "Mine", "match": {"kind": "lifecycle"}}],
                   "default_rules": False, "resolve_after": 99.0,
                   "external_url": "http://grafana.example/",
                   "receivers": [{"name": "r", "kind": "json", "urls": ["http://127.0.0.1:9/"]}]},
    }
    rules = short_tmp / "rules.toml"
    rules.write_text("rules = []\n")
    changes["alerts"]["default_rules_file"] = str(rules)
    try:
        async with running_daemon(cfg) as daemon:
            result = await reload_daemon(daemon, lambda: build_like(cfg, **changes))
            assert result is not None and result.restart == ()
            assert set(result.applied) == config.reloadable_keys()
            scheduler = daemon.scheduler
            assert (scheduler.interval, scheduler.deadline) == (0.5, 0.25)
            assert scheduler.admin_interval == 9.0
            assert "vm" in {c.name for c in scheduler.collectors} and scheduler.backing_chain
            assert daemon.domain_cache.resync_interval == 42.0
            assert daemon.guest_agent is not None
            assert (daemon.guest_agent.interval, daemon.guest_agent.timeout) == (7.0, 3.0)
            assert (daemon.journal.max_age, daemon.journal.max_count) == (2 * 86400.0, 1234)
            assert logging.getLogger().level == logging.WARNING
            executor = daemon.executor
            assert executor.migration_destinations == {"peer": "qemu+tcp://peer.example/system"}
            assert executor.migration_timeout == 60.0
            alerts = daemon.alerts
            assert [r.name for r in alerts.engine.event_rules] == ["Mine"]
            assert alerts.engine.default_resolve_after == 99.0
            assert [(t.receiver.name, t.generator_url) for t in alerts.targets] == [
                ("r", "http://grafana.example/")]
            assert daemon.config == build_like(cfg, **changes)
    finally:
        logsetup.set_level("info")


def test_the_reload_sets_no_field_of_another_object() -> None:
    """virtmon/reload.py assigns no attribute anywhere: each component applies its own
    section (an assignment like ``daemon.journal.max_age = ...`` fails this)."""
    tree = ast.parse((ROOT / "virtmon" / "reload.py").read_text(encoding="utf-8"))
    assigned = [ast.unparse(target) for node in ast.walk(tree)
                for target in (node.targets if isinstance(node, ast.Assign)
                               else [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign)
                               else [])
                if isinstance(target, ast.Attribute)]
    assert assigned == []


def test_the_status_line_is_read_from_the_status_document() -> None:
    """systemd's STATUS= is made of the components' answers in /v1/status, the outbox only
    when receivers are configured, why libvirt cannot be reached while it cannot, and a
    rejected reload last."""
    status = {"libvirt": {"state": "connected"}, "domains": 3,
              "collection": {"last_duration": 0.0125}, "journal": {"last_seq": 17},
              "alerts": {"receivers": ["am"], "outbox": {"pending": 2}}}
    assert status_line(status, "config reload failed (1 problem)") == (
        "libvirt connected, 3 domains, last cycle 12 ms, events journaled 17, outbox 2; "
        "config reload failed (1 problem)")
    status["alerts"] = {"receivers": [], "outbox": {"pending": 0}}
    assert status_line(status) == (
        "libvirt connected, 3 domains, last cycle 12 ms, events journaled 17")
    status["libvirt"] = {"state": "backoff", "last_error": "authentication failed"}
    assert status_line(status).startswith("libvirt backoff (authentication failed), 3 domains")


async def test_status_is_assembled_from_the_components(short_tmp: Path) -> None:
    """/v1/status keeps its shape, each part being the component's own status()."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"})
    async with running_daemon(cfg) as daemon:
        status = daemon.status()
        assert status["libvirt"] == daemon.supervisor.status()
        assert status["libvirt"]["uri"] == "test:///default"
        assert status["collection"] == daemon.scheduler.status()
        assert status["collection"]["cycles"] >= 1
        assert status["journal"] == daemon.journal.status()
        assert status["events"] == daemon.bus.status()
        assert status["alerts"] == daemon.alerts.status()
        assert status["control"] == {**daemon.executor.status(), "streams": 0, "consoles": 0}
        assert status["guest_agent"] == {"enabled": False}
        assert set(status) == {"version", "started_at", "libvirt", "domains", "collection",
                               "journal", "events", "admin_helper", "guest_agent", "control",
                               "alerts"}
