"""SIGHUP: validate the configuration again and swap what can change while running.

An invalid file changes nothing: every problem is logged, and systemd's ``STATUS=`` says the
daemon runs on the previous configuration until a reload succeeds. A valid file is compared key
by key with the running one: every changed key whose field is not declared reloadable
(``config.reloadable_keys``: the libvirt URI, the listeners, the control socket, the state
directory...) keeps its running value and is logged as needing a restart. Then each component
of ``Daemon.reconfigurable`` is handed its section and applies it inside itself, or answers what
waits for a restart (the admin collector turned on or off); ``Daemon.config`` always describes
what runs. This module sets nothing inside a component.
Files named by the configuration are read again even when their path did not change: the alert
rule file, receivers' HMAC secrets, and the web config (certificates and users of /metrics).
systemd is told ``RELOADING=1`` (with ``MONOTONIC_USEC``) before and ``READY=1`` after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
import structlog

from virtmon.component import Restart
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


def plan(old: Config, new: Config) -> ReloadPlan:
    """Split the changed keys into those a reload applies and those that need a restart, as
    their fields declare (a component may find more when it applies its section)."""
    applied: list[str] = []
    restart: list[str] = []
    reloadable = reloadable_keys()
    for key in changed_keys(old, new):
        (applied if key in reloadable else restart).append(key)
    return ReloadPlan(tuple(applied), tuple(restart))


def effective(old: Config, new: Config, plan_: ReloadPlan) -> Config:
    """The configuration that runs after the reload: the new one, minus what needs a restart
    (a key, or an entry of a table like ``collect.collectors.admin``)."""
    return new.keeping(old, (key for key in plan_.restart
                             if ".".join(key.split(".")[:2]) in SCHEMA_KEYS))


def _read_web_config(cfg: Config) -> WebConfig:
    """The web config file read again (certificates, users), so a reload renews them."""
    path = cfg.metrics.web_config_file
    if not path:
        return WebConfig()
    try:
        return load_web_config(Path(path))
    except WebConfigError as exc:
        raise ConfigError([f"metrics.web_config_file: {p}" for p in exc.problems]) from None


def _renew_web_config(daemon: Daemon, cfg: Config, web: WebConfig) -> Restart:
    """Serve /metrics with the web config read again; what waits for a restart."""
    if daemon.web_config is None:
        return ()
    restart = daemon.web_config.renew(web)
    if cfg.metrics.web_config_file and not restart:
        log.info("virtmon.reload.web_config", users=len(web.users),
                 tls=web.ssl_context is not None)
    return restart


def _reject(daemon: Daemon, problems: list[str]) -> None:
    """Keep the running configuration: log each problem and say so in the status."""
    for problem in problems:
        log.error("virtmon.reload.invalid", problem=problem)
    daemon.reload_rejected(
        f"config reload failed ({len(problems)} problem"
        f"{'' if len(problems) == 1 else 's'}), running the previous configuration")
    log.error("virtmon.reload.rejected", problems=len(problems))
    daemon.notifier.notify(READY=1, STATUS=daemon.status_line())


async def reload_daemon(daemon: Daemon, loader: Callable[[], Config]) -> ReloadPlan | None:
    """Reload the configuration into a running daemon; None when the new one is invalid."""
    daemon.notifier.reloading("reloading configuration")
    log.info("virtmon.reload.started", source=str(daemon.config.source))
    restart: list[str] = []
    try:
        new = await anyio.to_thread.run_sync(loader)
        result = plan(daemon.config, new)
        cfg = effective(daemon.config, new, result)
        # The web config is read before any change (a file may have gone bad since
        # validation); the first component, the alerts, reads its files before it changes.
        web = await anyio.to_thread.run_sync(_read_web_config, cfg)
        for part in daemon.reconfigurable:
            restart.extend(await part.reconfigure(cfg))
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
    restart.extend(_renew_web_config(daemon, cfg, web))
    result = ReloadPlan(result.applied, (*result.restart, *restart))
    daemon.reloaded(effective(daemon.config, new, result))
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
