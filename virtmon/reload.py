"""SIGHUP: validate the configuration again and swap what can change while running.

An invalid file changes nothing: every problem is logged, and systemd's ``STATUS=`` says the
daemon runs on the previous configuration until a reload succeeds. A valid file is compared key
by key with the running one: keys whose field declares them reloadable
(``config.reloadable_keys``) are applied at once; every other changed key (the libvirt URI, the
listeners, the control socket, the state directory...) is logged as needing a restart and keeps
its running value, so ``Daemon.config`` always describes what runs.
Files named by the configuration are read again even when their path did not change: the alert
rule file, receivers' HMAC secrets, and the web config (certificates and users of /metrics).
systemd is told ``RELOADING=1`` (with ``MONOTONIC_USEC``) before and ``READY=1`` after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
import structlog

from virtmon import logsetup
from virtmon.config import SCHEMA, Config, ConfigError, reloadable_keys
from virtmon.exposition.webconfig import WebConfig, WebConfigError, load_web_config

if TYPE_CHECKING:
    from virtmon.app import Daemon

log = structlog.get_logger("virtmon.reload").bind(component="reload")

SCHEMA_KEYS = frozenset(f"{section}.{name}" for section, keys in SCHEMA.items() for name in keys)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload changes: keys applied now, and keys that keep their value until a restart."""

    applied: tuple[str, ...]
    restart: tuple[str, ...]


def changed_keys(old: Config, new: Config) -> list[str]:
    """Every ``section.key`` whose value differs (``alerts.receivers`` compares the receivers)."""
    return [
        f"{section}.{name}"
        for section, keys in SCHEMA.items()
        for name in keys
        if getattr(old.section(section), name) != getattr(new.section(section), name)
    ]


def plan(old: Config, new: Config, admin_running: bool) -> ReloadPlan:
    """Split the changed keys into those applied now and those that need a restart.

    Turning the admin collector on or off needs a restart (it starts a supervised child); the
    other collectors switch at once.
    """
    from virtmon.app import enabled_collectors

    applied: list[str] = []
    restart: list[str] = []
    reloadable = reloadable_keys()
    for key in changed_keys(old, new):
        (applied if key in reloadable else restart).append(key)
    if ("admin" in enabled_collectors(new)) != admin_running:
        restart.append("collect.collectors.admin")
    return ReloadPlan(tuple(applied), tuple(restart))


def effective(old: Config, new: Config, plan_: ReloadPlan) -> Config:
    """The configuration that runs after the reload: the new one, minus what needs a restart."""
    cfg = new.keeping(old, (key for key in plan_.restart if key in SCHEMA_KEYS))
    if "collect.collectors.admin" in plan_.restart:
        collectors = dict(cfg.collect.collectors)
        old_admin = old.collect.collectors.get("admin")
        if old_admin is None:
            collectors.pop("admin", None)
        else:
            collectors["admin"] = old_admin
        cfg = replace(cfg, collect=replace(cfg.collect, collectors=collectors))
    return cfg


def _read_web_config(cfg: Config) -> WebConfig:
    """The web config file read again (certificates, users), so a reload renews them."""
    path = cfg.metrics.web_config_file
    if not path:
        return WebConfig()
    try:
        return load_web_config(Path(path))
    except WebConfigError as exc:
        raise ConfigError([f"metrics.web_config_file: {p}" for p in exc.problems]) from None


def _apply(daemon: Daemon, cfg: Config) -> None:
    """Push the runtime keys of ``cfg`` into the running components."""
    from virtmon.app import enabled_collectors

    logsetup.set_level(cfg.log.level)
    scheduler = daemon.scheduler
    scheduler.interval = cfg.collect.interval
    scheduler.deadline = scheduler.interval * cfg.collect.deadline_ratio
    scheduler.use_collectors(enabled_collectors(cfg))
    scheduler.backing_chain = cfg.collect.block_backing_chain
    daemon.domain_cache.resync_interval = cfg.collect.resync_interval
    daemon.journal.max_age = cfg.events.retention_days * 86400.0
    daemon.journal.max_count = cfg.events.retention_count


def _reject(daemon: Daemon, problems: list[str]) -> None:
    """Keep the running configuration: log each problem and say so in the status."""
    for problem in problems:
        log.error("virtmon.reload.invalid", problem=problem)
    daemon.config_problem = (
        f"config reload failed ({len(problems)} problem"
        f"{'' if len(problems) == 1 else 's'}), running the previous configuration"
    )
    log.error("virtmon.reload.rejected", problems=len(problems))
    daemon.notifier.notify(READY=1, STATUS=daemon.status_line())


async def reload_daemon(daemon: Daemon, loader: Callable[[], Config]) -> ReloadPlan | None:
    """Reload the configuration into a running daemon; None when the new one is invalid."""
    daemon.notifier.reloading("reloading configuration")
    log.info("virtmon.reload.started", source=str(daemon.config.source))
    try:
        new = await anyio.to_thread.run_sync(loader)
        result = plan(daemon.config, new, daemon.admin_helper is not None)
        cfg = effective(daemon.config, new, result)
        # These read files again (one may have gone bad since validation), so they come before
        # any change: the web config is only read here, the alerts read before they change.
        web = await anyio.to_thread.run_sync(_read_web_config, cfg)
        await daemon.alerts.reconfigure(cfg.alerts)
    except (ConfigError, OSError) as exc:
        if isinstance(exc, OSError):
            exc = ConfigError([f"alerts: {exc}"])
        _reject(daemon, exc.problems)
        return None
    except Exception as exc:
        # A fault in virtmon's own validation must not end a daemon that runs fine on the
        # configuration it has: the reload is refused, and the traceback logged for a fix.
        log.exception("virtmon.reload.crashed")
        _reject(daemon, [f"virtmon failed to read the configuration: {type(exc).__name__}: {exc}"])
        return None
    _apply(daemon, cfg)
    if daemon.web_config is not None:
        if daemon.web_config.can_take(web):
            before = daemon.web_config.fingerprint
            daemon.web_config.replace(web)
            if web.ssl_context is not None:
                # Said either way: an operator who renewed a certificate sees it taken or not.
                log.info("virtmon.reload.certificate", cert_file=web.cert_file,
                         fingerprint=web.fingerprint, changed=web.fingerprint != before)
            if cfg.metrics.web_config_file:
                log.info("virtmon.reload.web_config", users=len(web.users),
                         tls=web.ssl_context is not None)
        else:
            result = replace(result, restart=(*result.restart, "metrics.web_config_file (TLS)"))
    daemon.config = cfg
    daemon.config_problem = None
    try:
        # events.retention_* apply at once: the journal is pruned now, not within the hour.
        await daemon.prune_journal()
    except Exception:
        log.exception("virtmon.journal.prune_failed")
    if result.restart:
        log.warning("virtmon.reload.restart_needed", keys=list(result.restart))
    log.info("virtmon.reload.done", applied=list(result.applied))
    daemon.notifier.notify(READY=1, STATUS=daemon.status_line())
    return result
