"""The alerts service the daemon composes: rule engine, outbox store and one task per receiver URL.

The daemon registers :meth:`AlertService.on_event` as a bus listener, hands it each cycle's
families with :meth:`AlertService.on_families`, appends :meth:`AlertService.families` to its own
metrics, runs :meth:`AlertService.run` in its task group, and calls :meth:`AlertService.close`
after the group has ended.
"""

from __future__ import annotations

import functools
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus

from virtmon.address import split_listen
from virtmon.alerts.delivery import ReceiverFiles, Target
from virtmon.alerts.engine import AlertEngine, PresentDomains
from virtmon.alerts.metrics import alert_families
from virtmon.alerts.ruleconfig import load_rules
from virtmon.alerts.rules import Rule
from virtmon.alerts.silences import Silences
from virtmon.alerts.store import AlertStore
from virtmon.collectors.base import MetricFamily
from virtmon.component import Restart
from virtmon.config import AlertsConfig, ConfigError
from virtmon.events.journal import Journal
from virtmon.events.model import Event

log = structlog.get_logger("virtmon.alerts.service").bind(component="alerts")

PRUNE_INTERVAL = 600.0
# Resolved alerts of a domain that no longer exists are kept this long (seconds), not the full
# retention: churn creates and deletes domains by the thousand.
GONE_RETENTION = 3600.0
TARGET_RESTART = 5.0  # seconds before a failed delivery task starts again


def generator_url(alerts: AlertsConfig, listen: str, host: str) -> str:
    """``alerts.external_url``, else this host's metrics endpoint (``metrics.listen``)."""
    if alerts.external_url:
        return alerts.external_url
    _listen_host, port = split_listen(listen)
    return f"http://{host}:{port}/metrics"


def read_setup(alerts: AlertsConfig) -> tuple[list[Rule], dict[str, ReceiverFiles]]:
    """The rules (the default rule file is read) and each receiver's files (blocking).

    build() validated them already; a file changed since is still an error, with its key.
    """
    problems: list[str] = []
    rules = load_rules({"rules": list(alerts.rules), "default_rules": alerts.default_rules,
                        "default_rules_file": alerts.default_rules_file}, problems)
    files: dict[str, ReceiverFiles] = {}
    for index, receiver in enumerate(alerts.receivers):
        try:
            files[receiver.name] = ReceiverFiles.read(receiver)
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"alerts.receivers[{index}]: cannot load its files: {exc}")
    if problems:
        raise ConfigError(problems)
    return rules, files


class AlertService:
    """Rules, alert state, the outbox and webhook delivery, as one component."""

    def __init__(self, alerts: AlertsConfig, journal: Journal, metrics_listen: str,
                 host: str | None = None, clock: Callable[[], float] = time.time,
                 present_domains: PresentDomains = lambda: None) -> None:
        rules, files = read_setup(alerts)
        self.host = host or socket.gethostname()
        self.metrics_listen = metrics_listen  # the generator URL's port, without external_url
        self.clock = clock
        self.retention = alerts.retention_days * 86400.0
        self.store = AlertStore(journal.path)
        self.silences = Silences(journal.path)
        self.targets = self._targets(alerts, files, [])
        self.present_domains = present_domains
        self.engine = AlertEngine(
            rules, self.store, journal, [(t.receiver.name, t.url) for t in self.targets],
            self.host, default_resolve_after=alerts.resolve_after,
            on_enqueued=self.kick, clock=clock, silences=self.silences,
            present_domains=present_domains)
        self._group: anyio.abc.TaskGroup | None = None
        self._scopes: dict[Target, anyio.CancelScope] = {}  # running targets' task scopes

    def _targets(self, alerts: AlertsConfig, files: Mapping[str, ReceiverFiles],
                 running: Sequence[Target]) -> list[Target]:
        """One target per receiver URL: a running one where nothing about it changed."""
        url = generator_url(alerts, self.metrics_listen, self.host)
        targets = []
        for receiver in alerts.receivers:
            read = files[receiver.name]
            for target_url in receiver.urls:
                same = next((t for t in running
                             if t.serves(receiver, target_url, url, read)), None)
                targets.append(same or Target(
                    receiver, target_url, self.store, self.host, url, clock=self.clock,
                    notified=self.silences.notified, files=read))
        return targets

    async def reconfigure(self, alerts: AlertsConfig) -> Restart:
        """Apply a reloaded ``[alerts]``: its rules and receivers (``retention_days`` waits for
        a restart). A file that cannot be read raises ConfigError before anything changes.

        Rules are swapped at once, and alerts of removed rules resolve. Each receiver URL whose
        settings are unchanged keeps its running target; the others are stopped and started
        anew. Rows queued for a URL that is no longer configured stay in the outbox (listed by
        ``alerts.outbox``) and are delivered if it comes back.
        """
        rules, files = await anyio.to_thread.run_sync(read_setup, alerts)
        self.engine.use_rules(rules, alerts.resolve_after)
        targets = self._targets(alerts, files, self.targets)
        stopped = [t for t in self.targets if t not in targets]
        for target in stopped:
            scope = self._scopes.pop(target, None)
            if scope is not None:
                scope.cancel()
        started = [t for t in targets if t not in self.targets]
        self.targets = targets
        self.engine.targets = [(t.receiver.name, t.url) for t in targets]
        if self._group is not None:
            for target in started:
                self._group.start_soon(self._run_target, target)
        log.info("virtmon.alerts.reconfigured", rules=len(rules), targets=len(targets),
                 started=len(started), stopped=len(stopped))
        return ()

    def status(self) -> dict[str, Any]:
        """The ``alerts`` part of the daemon's status: active alerts and the outbox, as the
        delivery tasks last counted it."""
        oldest = [t.oldest for t in self.targets if t.oldest is not None]
        return {
            "active": len(self.engine.active),
            "receivers": sorted({t.receiver.name for t in self.targets}),
            "outbox": {"pending": sum(t.depth for t in self.targets),
                       "oldest_created_at": min(oldest) if oldest else None},
        }

    def kick(self) -> None:
        """Wake every delivery task (new outbox rows)."""
        for target in self.targets:
            target.kick()

    def changed(self) -> None:
        """A control operation changed alerts or silences: the engine and deliveries look now."""
        self.engine.wake()
        self.kick()

    def on_event(self, event: Event) -> None:
        """Bus listener."""
        self.engine.on_event(event)

    def on_families(self, families: Sequence[MetricFamily]) -> None:
        """Each cycle's families, for the threshold rules."""
        self.engine.on_families(families)

    def families(self) -> list[MetricFamily]:
        """This cycle's alert and webhook metrics."""
        return alert_families(self.engine, self.targets, self.clock())

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the engine and the delivery tasks until cancelled; started once state is loaded."""
        async with anyio.create_task_group() as group:
            group.start_soon(self.engine.run)
            await self.engine.ready.wait()
            self._group = group
            for target in self.targets:
                group.start_soon(self._run_target, target)
            group.start_soon(self._prune)
            task_status.started()

    async def _run_target(self, target: Target) -> None:
        """One target's task, until cancelled; a failure of one receiver URL stays its own."""
        with anyio.CancelScope() as scope:
            self._scopes[target] = scope
            try:
                while True:
                    try:
                        await target.run()
                        return  # it delivers until cancelled: ending on its own is its choice
                    except Exception:
                        log.exception("virtmon.webhook.target_failed",
                                      receiver=target.receiver.name, url=target.url,
                                      retry_in=TARGET_RESTART)
                        await anyio.sleep(TARGET_RESTART)
            finally:
                self._scopes.pop(target, None)

    async def _prune(self) -> None:
        """Apply retention now (a daemon restarted often must prune too), then every
        PRUNE_INTERVAL."""
        while True:
            now = self.clock()
            present = self.present_domains()
            gone = None if present is None else (*present, now - GONE_RETENTION)
            removed = await anyio.to_thread.run_sync(
                functools.partial(self.store.prune, now - self.retention, gone=gone))
            removed += await anyio.to_thread.run_sync(
                self.silences.prune, now - self.retention)
            if removed:
                log.info("virtmon.alerts.pruned", rows=removed)
            await anyio.sleep(PRUNE_INTERVAL)

    def close(self) -> None:
        """Close the database connections (after :meth:`run` has ended)."""
        self.store.close()
        self.silences.close()
