"""The composition root: builds every component from the configuration and runs them.

The lifecycle reads like a script: check that the metrics address is free, register libvirt's
event implementation, open the journal, start the bus, make the first connection attempt, open
the listeners, read the domains' facts, run the first collection cycle, then serve until asked to
stop; on stop, close the listeners, let the bus journal what it holds, close libvirt and keep the
loop running until the event implementation has drained.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import grp
import os
import resource
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from virtmon import __version__
from virtmon.address import split_listen
from virtmon.admin.client import AdminEvent, AdminHelper
from virtmon.admin.stats import AdminStats
from virtmon.alerts.service import AlertService
from virtmon.component import Part
from virtmon.config import Config
from virtmon.control.console import Consoles
from virtmon.control.events_stream import StreamLimits, StreamSlots
from virtmon.control.executor import Executor
from virtmon.control.roles import RoleMap
from virtmon.control.server import control_app
from virtmon.events.bus import EventBus
from virtmon.events.counters import EventCounters
from virtmon.events.journal import Journal
from virtmon.events.model import ADMIN_KIND, Event
from virtmon.exposition.http import metrics_app
from virtmon.exposition.process import process_registry
from virtmon.exposition.webconfig import (
    LiveWebConfig,
    WebConfig,
    basic_auth_middleware,
    load_web_config,
)
from virtmon.logsetup import RunningLog
from virtmon.scheduler import Scheduler, enabled_collectors
from virtmon.selfmetrics import CycleStats, SelfMetrics
from virtmon.systemd import Notifier, listen_fds, pick_socket
from virtmon.virt.calls import LibvirtCaller
from virtmon.virt.connection import ConnectionSupervisor
from virtmon.virt.domain_cache import DomainInfoCache, MetadataLabels
from virtmon.virt.eventloop import register_event_impl
from virtmon.virt.guest_agent import GuestAgentPoller
from virtmon.virt.handle import ConnectionSettings
from virtmon.virt.inventory import Inventory
from virtmon.virt.inventory_store import InventoryStore, recall
from virtmon.virt.jobs import JobWatcher
from virtmon.virt.pool import ConnectionPool

log = structlog.get_logger("virtmon.app").bind(component="app")

SHUTDOWN_DEADLINE = 10.0
# Seconds between saves of the inventory (it is saved at every stop too): what a restart after a
# kill replays from the journal on top of the last save.
INVENTORY_SAVE_INTERVAL = 300.0
# How long a thread may hold the GIL before another asks for it (CPython's default is 5 ms).
# The cycle renders and parses in worker threads while the loop serves scrapes: at 1 ms a scrape
# that meets a running cycle waits less (p99 at 1,000 domains, one scraper: 8-12 ms down to
# 5 ms in the same run) and cycles take no longer (bench/bench_scrape.py, bench_cycle.py).
GIL_SWITCH_INTERVAL = 0.001
# How often retention is applied to the journal (also at start and on every reload).
PRUNE_INTERVAL = 3600.0


def raise_fd_limit() -> int:
    """Raise the soft limit of open files to the hard one; the soft limit now.

    Every control connection is a descriptor: at systemd's default soft limit (1,024) a local
    caller holding connections open could leave the daemon unable to accept any other, or to
    open its own files. The hard limit (524,288 under systemd) is the bound meant for this.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def status_line(status: Mapping[str, Any], config_problem: str | None = None) -> str:
    """systemd's STATUS= line from a ``/v1/status`` document (and a rejected reload)."""
    alerts = status["alerts"]
    libvirt = status["libvirt"]
    # While libvirt cannot be reached, why (systemctl status shows it without a log search).
    failing = (f" ({libvirt['last_error']})"
               if libvirt.get("last_error") and libvirt["state"] != "connected" else "")
    return (f"libvirt {libvirt['state']}{failing}, {status['domains']} domains, "
            f"last cycle {status['collection']['last_duration'] * 1000:.0f} ms, "
            f"events journaled {status['journal']['last_seq']}"
            + (f", outbox {alerts['outbox']['pending']}" if alerts["receivers"] else "")
            + (f"; {config_problem}" if config_problem else ""))


class ControlSocketInUse(RuntimeError):
    """Another daemon is listening on the configured control socket."""


def socket_answers(path: Path) -> bool:
    """True when something accepts connections on the Unix socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class ListenAddressInUse(OSError):
    """Something else listens on the metrics address."""


def listen_address_taken(host: str | None, port: int) -> bool:
    """True when ``host:port`` cannot be bound because something else listens there.

    Bound and let go at once, with the options the listener binds with (SO_REUSEADDR, IPv6
    sockets for IPv6 only), on every address the listener would bind.
    """
    for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


class Daemon:
    """virtmon: one loop serving events, metrics and the control socket."""

    def __init__(self, config: Config, demo: bool = False) -> None:
        self.config = config
        self.demo = demo
        self.started_at = time.time()
        self._stop = anyio.Event()
        self.started = anyio.Event()
        self.finished = anyio.Event()
        state_dir = Path(config.state.dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(state_dir / "virtmon.db")
        self.journal.use_retention(config.events)
        self.bus = EventBus(self.journal, ingest_size=config.events.queue_size)
        self.inventory = Inventory()
        self.inventory_store = InventoryStore(self.journal.path)
        self.caller = LibvirtCaller(
            capacity=config.libvirt.max_concurrent_calls,
            default_deadline=config.libvirt.call_timeout,
            max_abandoned=config.collect.max_abandoned_calls,
        )
        auth_file = config.libvirt.auth_file
        settings = ConnectionSettings(
            uri=config.libvirt.uri,
            readonly=config.libvirt.readonly,
            open_timeout=config.libvirt.open_timeout,
            keepalive_interval=config.libvirt.keepalive_interval,
            keepalive_count=config.libvirt.keepalive_count,
            auth_file=Path(auth_file) if auth_file else None,
        )
        self.supervisor = ConnectionSupervisor(settings, self.caller, self.bus, self.inventory)
        # A cycle makes two calls at once, and the caller starts none while max_abandoned_calls
        # are stuck: at most max_abandoned_calls - 1 stuck and two in use.
        self.pool = ConnectionPool(settings, config.collect.max_abandoned_calls + 1, reads=True)
        # The cache's reads get a connection of their own, never the events connection: see
        # domain_cache's docstring (a call queued there during a stall crashes libvirt 9.0).
        self.domain_connection = ConnectionPool(settings, 1, reads=True)
        self.domain_cache = DomainInfoCache(
            self.supervisor, self.domain_connection, self.caller,
            MetadataLabels(config.collect.metadata_labels, config.collect.metadata_namespaces),
            resync_interval=config.collect.resync_interval,
        )
        self.bus.add_listener(self.domain_cache.on_event)
        self.event_counters = EventCounters()
        self.bus.add_listener(self.event_counters.on_event)
        self.alerts = AlertService(config.alerts, self.journal, config.metrics.listen,
                                   present_domains=self._present_domains)
        self.bus.add_listener(self.alerts.on_event)
        self.admin_helper: AdminHelper | None = None
        if "admin" in enabled_collectors(config.collect):
            self.admin_helper = AdminHelper(
                config.libvirt.admin_uri, on_event=self._admin_event
            )
        self.notifier = Notifier()
        # Sockets passed by systemd (virtmon.socket): served instead of binding our own.
        self.activated = listen_fds()
        self.control_activated = False
        self._control_bound = False
        self.config_problem: str | None = None  # set while a reload was rejected
        # Running jobs' progress, for the few domains known to have one (virt/jobs.py).
        self.jobs = JobWatcher(self.supervisor, settings, self.inventory, config.collect)
        self.bus.add_listener(self.jobs.on_event)
        self.executor = Executor(
            caller=self.caller, supervisor=self.supervisor, admin_helper=self.admin_helper,
            bus=self.bus, allow_write=config.control.allow_write,
            deadline=config.control.request_timeout, alerts=self.alerts,
            migration_destinations=config.control.migration_destinations,
            migration_timeout=config.control.migration_timeout, jobs=self.jobs,
        )
        # The consoles and channels open on the control socket (their own connections and caller).
        self.consoles = Consoles(self.executor)
        # Its last results join each cycle's exposition; its calls never share the cycle's.
        self.guest_agent: GuestAgentPoller | None = None
        if config.collect.guest_agent:
            self.guest_agent = GuestAgentPoller(self.supervisor, settings, config.collect)
            self.bus.add_listener(self.guest_agent.on_event)
        cycle_stats = CycleStats()
        self.scheduler = Scheduler(
            self.supervisor, self.pool, self.caller, config.collect,
            sources=[SelfMetrics(self.supervisor, self.bus, self.caller, cycle_stats),
                     self.alerts, self.executor.stats, self.consoles, self.jobs,
                     *([self.guest_agent] if self.guest_agent is not None else [])],
            stats=cycle_stats,
            domain_info=self.domain_cache.snapshot,
            admin=self._admin_stats if self.admin_helper is not None else None,
            # Counts of domains the inventory no longer has are dropped (deleted domains).
            event_counts=lambda: self.event_counters.snapshot(self.inventory.names()),
            client_metrics=process_registry(self._admin_helper_pid),
        )
        self.scheduler.cycle_listeners.append(self.alerts.on_families)
        self.scheduler.snapshot_listeners.append(self.jobs.on_snapshot)
        self.running_log = RunningLog()
        # What a reload reconfigures, each with its section; the alerts first: they read files
        # again and refuse the reload (before anything changed) if one went bad.
        self.reconfigurable: list[Part[Any]] = [
            Part(self.alerts, lambda cfg: cfg.alerts),
            Part(self.running_log, lambda cfg: cfg.log),
            Part(self.scheduler, lambda cfg: cfg.collect),
            Part(self.domain_cache, lambda cfg: cfg.collect),
            Part(self.journal, lambda cfg: cfg.events),
            Part(self.executor, lambda cfg: cfg.control),
            Part(self.jobs, lambda cfg: cfg.collect),
        ]
        if self.guest_agent is not None:
            self.reconfigurable.append(Part(self.guest_agent, lambda cfg: cfg.collect))
        self.metrics_address = ""
        self.web_config: LiveWebConfig | None = None  # once the metrics listener is up
        self.control_socket = Path(config.control.socket)
        self.stream_slots = StreamSlots(StreamLimits(
            queue_size=config.events.subscriber_queue_size,
            max_streams=config.control.max_streams,
            max_streams_per_caller=config.control.max_streams_per_caller,
        ))

    async def _admin_stats(self, deadline: float) -> AdminStats:
        assert self.admin_helper is not None
        result = await self.admin_helper.request("snapshot", timeout=deadline)
        return AdminStats.from_helper(result, read_at=time.time())

    def _admin_helper_pid(self) -> int | None:
        return self.admin_helper.pid if self.admin_helper is not None else None

    def _admin_event(self, event: AdminEvent) -> None:
        """Loss and return of the admin connection (and helper restarts) go into the stream."""
        self.bus.publish(Event(
            time=time.time(), uri=self.config.libvirt.admin_uri, kind=ADMIN_KIND,
            name=event.kind, detail=str(event.detail.get("reason")) if "reason" in event.detail
            else None, payload=dict(event.detail),
        ))

    def reloaded(self, config: Config) -> None:
        """A reload applied ``config`` (what runs now): a rejected one is forgotten."""
        self.config = config
        self.config_problem = None

    def reload_rejected(self, problem: str) -> None:
        """A reload was refused: the status line says so until one succeeds."""
        self.config_problem = problem

    def stop(self) -> None:
        """Begin a graceful shutdown."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once a shutdown has begun."""
        return self._stop.is_set()

    def ready(self) -> tuple[bool, str]:
        """Connected to libvirt and data fresher than two intervals."""
        if not self.supervisor.connected:
            return False, f"libvirt not connected ({self.supervisor.state.value})"
        age = time.time() - self.scheduler.stats.last_success
        if age > 2 * self.scheduler.interval:
            return False, f"data is {age:.1f} s old"
        return True, "ready"

    def status(self) -> dict[str, Any]:
        """The daemon's state for ``GET /v1/status``: each component's own answer."""
        return {
            "version": __version__,
            "started_at": self.started_at,
            "libvirt": self.supervisor.status(),
            "domains": len(self.inventory),
            "collection": self.scheduler.status(),
            "journal": self.journal.status(),
            "events": self.bus.status(),
            "admin_helper": (self.admin_helper.status() if self.admin_helper is not None
                             else {"enabled": False, "pid": None, "restarts": 0}),
            "guest_agent": (self.guest_agent.status() if self.guest_agent is not None
                            else {"enabled": False}),
            "control": {**self.executor.status(), "streams": self.stream_slots.open,
                        "consoles": self.consoles.open},
            "alerts": self.alerts.status(),
        }

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`stop`; ``started`` once listeners and the first cycle are up.

        A stop during start-up ends the run without ``started`` ever being reported.
        """
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # the daemon owns its process
        raise_fd_limit()
        await self._check_listen_address()  # before libvirt is contacted: a clash says so at once
        impl = register_event_impl()
        runners: list[web.AppRunner] = []
        try:
            async with anyio.create_task_group() as bus_group:
                bus_group.start_soon(self.bus.run)
                try:
                    async with anyio.create_task_group() as group:
                        # A stop asked for while starting (a hung libvirtd holds the first
                        # connection or cycle) cancels the start-up too, instead of waiting on it.
                        group.start_soon(self._stop_when_asked, group.cancel_scope)
                        await group.start(self.alerts.run)
                        await self._recall_inventory()
                        await group.start(self.supervisor.run)
                        await self._save_inventory()  # a kill before the first periodic save
                        group.start_soon(self._save_inventory_every, INVENTORY_SAVE_INTERVAL)
                        self.scheduler.publish_own_metrics()
                        runners = await self._start_listeners()
                        if self.admin_helper is not None:
                            await group.start(self.admin_helper.run)
                        # The first cycle at once, with the domains' facts already read.
                        await group.start(self.domain_cache.run, self.scheduler.deadline)
                        await group.start(self.scheduler.run)
                        if self.guest_agent is not None:
                            await group.start(self.guest_agent.run)
                        await group.start(self.jobs.run)
                        group.start_soon(self._prune_journal)
                        group.start_soon(self._report_to_systemd)
                        if self.demo:
                            from virtmon.demo import run_demo

                            group.start_soon(run_demo, self.config.libvirt.uri, self.caller)
                        log.info("virtmon.started", metrics=self.metrics_address,
                                 control_socket=str(self.control_socket),
                                 uri=self.config.libvirt.uri)
                        # Everything alive now (modules, configuration, caches) lives as long as
                        # the daemon: out of the collector's sight, a full collection scans
                        # only what came after. Full collections holding the GIL for ~20 ms at a
                        # thousand domains were most of the loop's lag; ~2 ms after this.
                        gc.freeze()
                        task_status.started()
                        self.started.set()
                        self.notifier.notify(READY=1, STATUS=self.status_line())
                finally:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_DEADLINE):
                        self.bus.end_streams()
                        for runner in runners:
                            await runner.cleanup()
                        self.bus.close()  # the bus journals what it holds, then returns
                        # Now exact: every event the inventory reflects is journaled.
                        await self._save_inventory()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_DEADLINE):
                await anyio.to_thread.run_sync(self.pool.reset)
                await anyio.to_thread.run_sync(self.domain_connection.reset)
                if self.guest_agent is not None:
                    await anyio.to_thread.run_sync(self.guest_agent.close)
                await anyio.to_thread.run_sync(self.jobs.close)
                await anyio.to_thread.run_sync(self.executor.close)
                await impl.drain()
            self.journal.close()
            self.inventory_store.close()
            self.alerts.close()
            if self._control_bound:  # only our own file: not systemd's, not another daemon's
                with contextlib.suppress(OSError):
                    self.control_socket.unlink()
            gc.unfreeze()  # a process that runs daemons one after another (tests) collects again
            log.info("virtmon.stopped")
            self.finished.set()

    async def _stop_when_asked(self, scope: anyio.CancelScope) -> None:
        await self._stop.wait()
        log.info("virtmon.stopping", started=self.started.is_set())
        self.notifier.notify(STOPPING=1)
        scope.cancel()

    async def _check_listen_address(self) -> None:
        """Refuse to start, with the way out, when the metrics address is taken."""
        if pick_socket(self.activated, "metrics", (socket.AF_INET, socket.AF_INET6)) is not None:
            return  # systemd's socket: nothing of ours to bind
        listen = self.config.metrics.listen
        host, port = split_listen(listen)
        if await anyio.to_thread.run_sync(listen_address_taken, host, port):
            other = f"{listen.rpartition(':')[0]}:{port + 1}"
            way_out = (f"make run LISTEN={other} (virtmon run --listen {other})" if self.demo
                       else f"--listen HOST:PORT or metrics.listen, e.g. {other}")
            raise ListenAddressInUse(f"the metrics address {listen} is in use (another "
                                     f"virtmon?); choose another with {way_out}")

    async def _start_listeners(self) -> list[web.AppRunner]:
        loaded = WebConfig()
        if self.config.metrics.web_config_file:
            loaded = load_web_config(Path(self.config.metrics.web_config_file))
        self.web_config = web_config = LiveWebConfig(loaded)
        if loaded.ssl_context is not None:
            log.info("virtmon.metrics.tls", cert_file=loaded.cert_file,
                     fingerprint=loaded.fingerprint, users=len(loaded.users))
        app = metrics_app(lambda: self.scheduler.exposition, self.ready)
        app.middlewares.append(basic_auth_middleware(web_config.users))
        metrics = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await metrics.setup()
        host, port = split_listen(self.config.metrics.listen)
        passed = pick_socket(self.activated, "metrics", (socket.AF_INET, socket.AF_INET6))
        site: web.BaseSite
        if passed is not None:
            host, port = passed.getsockname()[:2]
        if web_config.ssl_context is not None:
            # Its own handshakes, so that a refused one is logged (asyncio's are silent).
            from virtmon.exposition.tlssite import TLSSite  # here: only with TLS configured

            site = TLSSite(metrics, web_config.ssl_context, host=host, port=port, sock=passed)
        elif passed is not None:
            site = web.SockSite(metrics, passed)
        else:
            site = web.TCPSite(metrics, host, port, reuse_address=True)
        await site.start()
        scheme = "https" if web_config.ssl_context else "http"
        self.metrics_address = f"{scheme}://{host or '0.0.0.0'}:{port}"
        control = web.AppRunner(
            control_app(self.bus, self.inventory, self.status,
                        max_body=self.config.control.max_body,
                        executor=self.executor,
                        roles=RoleMap.from_config(self.config.control),
                        max_in_flight=self.config.control.max_requests,
                        max_per_caller=self.config.control.max_requests_per_caller,
                        stream_limits=self.stream_slots.limits,
                        stream_slots=self.stream_slots, consoles=self.consoles),
            access_log=None,
            # A follower that goes away must not keep its handler waiting for the next event.
            handler_cancellation=True,
            # An idle connection (one that never sends a request too) is closed after a minute:
            # a caller cannot hoard the daemon's file descriptors.
            keepalive_timeout=60.0,
            shutdown_timeout=2.0,
        )
        await control.setup()
        activated = pick_socket(self.activated, "control", (socket.AF_UNIX,))
        if activated is not None:
            # systemd bound it (and set its mode and group): serve on it as it is.
            self.control_activated = True
            self.control_socket = Path(activated.getsockname())
            await web.SockSite(control, activated).start()
            log.info("virtmon.control.socket_activated", path=str(self.control_socket))
            return [metrics, control]
        self.control_socket.parent.mkdir(parents=True, exist_ok=True)
        if socket_answers(self.control_socket):
            raise ControlSocketInUse(f"another virtmon answers on {self.control_socket}")
        with contextlib.suppress(FileNotFoundError):
            self.control_socket.unlink()  # a stale socket from a killed run
        await web.UnixSite(control, str(self.control_socket)).start()
        self._control_bound = True
        self._secure_socket(self.control_socket)
        return [metrics, control]

    def _secure_socket(self, path: Path) -> None:
        os.chmod(path, int(self.config.control.socket_mode, 8))
        group = self.config.control.socket_group
        if not group:
            return
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except (KeyError, PermissionError) as exc:
            # The socket still works for its owner (and root): say why the group cannot use it.
            log.warning("virtmon.control.socket_group_not_set", group=group, socket=str(path),
                        error="no such group" if isinstance(exc, KeyError) else str(exc))

    def status_line(self) -> str:
        """One line for systemd's STATUS=, from the status document."""
        return status_line(self.status(), self.config_problem)

    async def _report_to_systemd(self) -> None:
        """STATUS= after each cycle and WATCHDOG=1 from the loop, so a stuck loop is restarted."""
        if self.notifier.address is None:
            return  # not run by systemd: no line to build and no wake-up for it
        period = self.notifier.watchdog_interval or self.scheduler.interval
        period = min(period, self.scheduler.interval)
        while True:
            await anyio.sleep(period)
            fields: dict[str, str | int] = {"STATUS": self.status_line()}
            if self.notifier.watchdog_interval:
                fields["WATCHDOG"] = 1
            self.notifier.notify(**fields)

    def _present_domains(self) -> tuple[str, frozenset[str]] | None:
        """The URI and the names of its domains, once known (alerts of others resolve)."""
        if not self.inventory.populated:
            return None
        return self.config.libvirt.uri, frozenset(self.inventory.names())

    async def _recall_inventory(self) -> None:
        """Begin from the inventory the journal last described, so that the first listing
        journals what changed while virtmon was not running (and alerts about it resolve)."""
        known = await anyio.to_thread.run_sync(
            recall, self.inventory_store, self.journal, self.config.libvirt.uri)
        if known is None:
            log.info("virtmon.inventory.not_recalled", reason="nothing saved, or the journal "
                     "no longer holds every event since it was saved")
            return
        self.inventory.recall(known)
        log.info("virtmon.inventory.recalled", domains=len(known))

    async def _save_inventory(self) -> None:
        if not self.inventory.populated:  # never listed: keep what was saved before
            return
        domains, seq = self.inventory.all(), self.journal.last_seq
        await anyio.to_thread.run_sync(
            self.inventory_store.save, self.config.libvirt.uri, domains, seq)

    async def _save_inventory_every(self, interval: float) -> None:
        # Bounds what a restart after a kill replays; events since are replayed from the journal.
        while True:
            await anyio.sleep(interval)
            await self._save_inventory()

    async def prune_journal(self) -> int:
        """Apply the journal's retention now (at start, hourly, and on every reload)."""
        removed = await anyio.to_thread.run_sync(self.journal.prune)
        if removed:
            log.info("virtmon.journal.pruned", removed=removed,
                     retention_days=self.journal.max_age / 86400.0,
                     retention_count=self.journal.max_count)
        return removed

    async def _prune_journal(self) -> None:
        # At once, then hourly: a daemon restarted more often than hourly still prunes.
        while True:
            try:
                await self.prune_journal()
            except Exception:
                log.exception("virtmon.journal.prune_failed")
            await anyio.sleep(PRUNE_INTERVAL)
