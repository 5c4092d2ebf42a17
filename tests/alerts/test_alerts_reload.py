"""A reload (SIGHUP) swaps alert rules and receivers in a running daemon without a restart."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.control_env import CRASH_RULE, URI, alert_daemon, domains_at, receiver
from tests.alerts.receiver import Recorder, serving
from tests.exposition.test_webconfig import make_certificate
from virtmon import config, configfile
from virtmon.reload import reload_daemon

PAUSE_RULE = {"name": "Paused", "severity": "warning", "summary": "{domain} paused",
              "match": {"kind": "lifecycle", "name": "suspended"},
              "resolve": {"kind": "lifecycle", "name": "resumed"}}


def reloaded(running: config.Config, **alerts: Any) -> config.Config:
    """The running configuration with some ``[alerts]`` keys changed, validated as a file is."""
    values = running.document()
    values["alerts"].update(alerts)
    values["libvirt"]["uri"] = URI
    return configfile.build(values)


async def test_a_reload_moves_deliveries_to_the_new_receivers_and_keeps_the_unchanged(
    short_tmp: Path,
) -> None:
    """A changed URL and a new receiver deliver after SIGHUP; an unchanged one keeps its task."""
    old, moved, kept, added = Recorder(), Recorder(), Recorder(), Recorder()
    async with serving(old), serving(moved), serving(kept), serving(added), alert_daemon(
            short_tmp, [receiver("hook", old.url), receiver("steady", kept.url)]) as env:
        service = env.daemon.alerts
        steady = next(t for t in service.targets if t.receiver.name == "steady")
        env.crash("web-1")
        await old.wait_for(lambda: "web-1" in domains_at(old))
        new = reloaded(env.daemon.config, receivers=[
            receiver("hook", moved.url), receiver("steady", kept.url),
            receiver("extra", added.url)])
        result = await reload_daemon(env.daemon, lambda: new)
        assert result is not None and "alerts.receivers" in result.applied
        assert result.restart == ()
        assert [(t.receiver.name, t.url) for t in service.targets] == [
            ("hook", moved.url), ("steady", kept.url), ("extra", added.url)]
        assert next(t for t in service.targets if t.receiver.name == "steady") is steady
        env.crash("web-2")
        for rec in (moved, kept, added):
            await rec.wait_for(lambda rec=rec: "web-2" in domains_at(rec))  # type: ignore[misc]
        assert domains_at(old) == ["web-1"]
        assert domains_at(kept) == ["web-1", "web-2"]  # nothing sent twice by a restarted task


async def test_a_reload_adds_rules_and_resolves_the_alerts_of_removed_ones(
    short_tmp: Path,
) -> None:
    """A rule added by reload fires; the alerts of a rule removed by reload are resolved."""
    rec = Recorder()
    async with serving(rec), alert_daemon(short_tmp, [receiver("hook", rec.url)]) as env:
        env.crash("web-1")
        await rec.wait_for(lambda: "web-1" in domains_at(rec))
        result = await reload_daemon(env.daemon, lambda: reloaded(
            env.daemon.config, rules=[PAUSE_RULE]))
        assert result is not None and "alerts.rules" in result.applied
        await rec.wait_for(lambda: "web-1" in domains_at(rec, "resolved"))
        assert (await env.alert("web-1"))["state"] == "resolved"
        env.publish("suspended", "paused", "db-1")
        env.crash("web-2")  # Crash is gone: no alert
        await rec.wait_for(lambda: "db-1" in domains_at(rec))
        alert = await env.alert("db-1", "firing")
        assert alert["rule"] == "Paused"
        assert (await env.call("alerts.list", domain="web-2"))["alerts"] == []


async def test_a_reload_whose_secret_file_vanished_changes_nothing(short_tmp: Path) -> None:
    """A receiver secret unreadable at reload: rejected, the running receivers keep delivering."""
    rec = Recorder()
    secret = short_tmp / "secret"
    secret.write_text("s3cret\n")
    async with serving(rec), alert_daemon(short_tmp, [receiver("hook", rec.url)]) as env:
        running = env.daemon.alerts.targets
        new = reloaded(env.daemon.config, rules=[CRASH_RULE, PAUSE_RULE], receivers=[
            receiver("hook", rec.url, hmac_secret_file=str(secret))])
        secret.unlink()  # after validation, before the alerts service reads it
        assert await reload_daemon(env.daemon, lambda: new) is None
        assert env.daemon.config_problem is not None
        assert env.daemon.alerts.targets is running
        assert [r.name for r in env.daemon.alerts.engine.event_rules] == ["Crash"]
        env.crash("web-1")
        await rec.wait_for(lambda: "web-1" in domains_at(rec))


async def test_a_reload_with_a_bad_ca_file_is_rejected_and_delivery_goes_on(
    short_tmp: Path,
) -> None:
    """A receiver CA file that holds no certificate: the reload is rejected with its key path,
    and the running receivers keep delivering (the daemon does not stop)."""
    rec = Recorder()
    bad = short_tmp / "ca.pem"
    bad.write_text("not a certificate\n")
    async with serving(rec), alert_daemon(short_tmp, [receiver("hook", rec.url)]) as env:
        result = await reload_daemon(env.daemon, lambda: reloaded(
            env.daemon.config, receivers=[receiver("hook", rec.url), receiver(
                "tls", "https://127.0.0.1:9/", tls_ca_file=str(bad))]))
        assert result is None and env.daemon.config_problem is not None
        env.crash("web-1")
        await rec.wait_for(lambda: "web-1" in domains_at(rec))
        assert not env.daemon.finished.is_set()


async def test_a_ca_file_renewed_in_place_restarts_only_its_receiver(short_tmp: Path) -> None:
    """Same keys, new contents of a receiver's CA file: that target is replaced on reload, the
    other keeps its task."""
    first, second = short_tmp / "first", short_tmp / "second"
    for directory in (first, second):  # two self-signed certificates to use as the CA file
        directory.mkdir()
        await asyncio.to_thread(make_certificate, directory)
    ca = short_tmp / "ca.pem"
    shutil.copyfile(first / "tls.crt", ca)
    rec = Recorder()
    async with serving(rec), alert_daemon(short_tmp, [
            receiver("hook", rec.url),
            receiver("tls", "https://127.0.0.1:9/", tls_ca_file=str(ca))]) as env:
        service = env.daemon.alerts
        before = {t.receiver.name: t for t in service.targets}
        result = await reload_daemon(env.daemon, lambda: reloaded(env.daemon.config))
        assert result is not None
        assert {t.receiver.name: t for t in service.targets} == before  # nothing changed
        shutil.copyfile(second / "tls.crt", ca)  # renewed in place
        result = await reload_daemon(env.daemon, lambda: reloaded(env.daemon.config))
        assert result is not None
        after = {t.receiver.name: t for t in service.targets}
        assert after["hook"] is before["hook"] and after["tls"] is not before["tls"]


async def test_a_delivery_task_that_fails_starts_again_and_others_go_on(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in one receiver URL's task: the task starts again and the alert still
    reaches that receiver, the other receiver is not held up, and the daemon does not stop."""
    from virtmon.alerts import service as service_module
    from virtmon.alerts.delivery import Target

    monkeypatch.setattr(service_module, "TARGET_RESTART", 0.2)
    original, failures = Target.run, []

    async def fails_once(self: Target) -> None:
        if self.receiver.name == "hook" and not failures:
            failures.append(self.url)
            raise RuntimeError("a bug in the delivery task")
        await original(self)

    monkeypatch.setattr(Target, "run", fails_once)
    rec, other = Recorder(), Recorder()
    async with serving(rec), serving(other), alert_daemon(
            short_tmp, [receiver("hook", rec.url), receiver("other", other.url)]) as env:
        env.crash("web-1")
        await other.wait_for(lambda: "web-1" in domains_at(other))
        await rec.wait_for(lambda: "web-1" in domains_at(rec))
        assert failures == [rec.url] and not env.daemon.finished.is_set()


async def test_a_reload_applies_the_alerts_section_inside_the_service_and_leaves_retention(
    short_tmp: Path,
) -> None:
    """The alerts service takes its reloaded section itself: resolve_after and the external URL
    apply (the targets' generator URL follows), alerts.retention_days is listed for a restart
    and keeps its running value in the service and in the daemon's configuration."""
    rec = Recorder()
    async with serving(rec), alert_daemon(short_tmp, [receiver("hook", rec.url)]) as env:
        service = env.daemon.alerts
        running_retention = service.retention
        result = await reload_daemon(env.daemon, lambda: reloaded(
            env.daemon.config, resolve_after=120.0, retention_days=1.0,
            external_url="http://grafana.example/d/1"))
        assert result is not None
        assert result.applied == ("alerts.resolve_after", "alerts.external_url")
        assert result.restart == ("alerts.retention_days",)
        assert service.engine.default_resolve_after == 120.0
        assert [t.generator_url for t in service.targets] == ["http://grafana.example/d/1"]
        assert service.retention == running_retention
        assert env.daemon.config.alerts.retention_days == running_retention / 86400.0
        assert env.daemon.status()["alerts"] == service.status()
