"""Running one operation: the right connection, a worker thread, a deadline, and an answer.

The caller's role picks the connection, never the operation: a read-role caller's request runs
on a read-only connection of its own (a small pool: a slow read never holds up the events
connection or a collection cycle), so libvirt itself enforces what a read-only client may do; a
write- or admin-role caller's runs on a read-write connection, opened on first use and only when
``control.allow_write`` is on (without it, on the read-only pool). The collectors never see
these connections. Admin operations go to the admin helper. Every failure becomes
:class:`Failure` carrying the HTTP status and libvirt's error code, so the server answers with a
problem document.

Status policy (docs/control-api.md): a libvirt error means libvirt refused this request, so it is
a 4xx (404 unknown object, 409 wrong state, 403 denied, 400 bad argument, 422 anything else
libvirt refused); 503 when libvirt or the helper cannot be reached, 504 when a deadline passed,
501 when this host's libvirt-python lacks the function, 500 for a fault in virtmon itself. A
migration is the exception: it involves a second host, so a libvirt error that is not one of the
refusals above (an internal or operation-failed error, the destination's connection closed) is
502, the other host or the way to it failed, unless this host's libvirt itself went away (503).
"""

from __future__ import annotations

import importlib.metadata
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import libvirt
import structlog

from virtmon.admin.client import (
    HELPER_TIMEOUT,
    HELPER_UNAVAILABLE,
    AdminError,
    AdminHelper,
)
from virtmon.component import Restart
from virtmon.config import ControlConfig
from virtmon.control.operations.domain_write import (
    DESTINATION,
    DESTINATION_SETTINGS,
    MIGRATIONS,
)
from virtmon.control.operations.model import ArgumentError, Operation, domain_key, jsonable
from virtmon.control.operations.names import error_name
from virtmon.control.roles import Peer, allows
from virtmon.events.bus import EventBus
from virtmon.events.model import AUDIT_KIND, Event
from virtmon.exposition.family import FamilySpec, MetricFamily
from virtmon.virt.calls import CallTimeout, LibvirtCaller, TooManyAbandoned
from virtmon.virt.connection import ConnectionSupervisor
from virtmon.virt.handle import ConnectionBusy, ConnectionClosed, ConnectionSettings
from virtmon.virt.pool import ConnectionPool

if TYPE_CHECKING:
    from virtmon.alerts.service import AlertService
    from virtmon.virt.jobs import JobWatcher

log = structlog.get_logger("virtmon.control").bind(component="control")

NOT_FOUND = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_INTERFACE,
             libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT, libvirt.VIR_ERR_NO_DOMAIN_METADATA,
             libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT, libvirt.VIR_ERR_NO_DOMAIN_BACKUP,
             libvirt.VIR_ERR_NO_SERVER, libvirt.VIR_ERR_NO_CLIENT}
CONFLICT = {libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_DOM_EXIST,
            libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNSYNCED,
            libvirt.VIR_ERR_BLOCK_COPY_ACTIVE, libvirt.VIR_ERR_OPERATION_ABORTED}
FORBIDDEN = {libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_ERR_ACCESS_DENIED,
             libvirt.VIR_ERR_AUTH_FAILED}
BAD_REQUEST = {libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_XML_ERROR,
               libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
               libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, libvirt.VIR_ERR_NO_SUPPORT,
               libvirt.VIR_ERR_OPERATION_UNSUPPORTED, libvirt.VIR_ERR_INVALID_MAC,
               libvirt.VIR_ERR_NO_NAME, libvirt.VIR_ERR_CPU_INCOMPATIBLE,
               libvirt.VIR_ERR_MIGRATE_UNSAFE}
UNAVAILABLE = {libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT}
TIMEOUT = {libvirt.VIR_ERR_OPERATION_TIMEOUT}
REDACTED = frozenset({"password"})
AUDIT_TEXT_MAX = 2048


def status_for(code: int) -> int:
    """The HTTP status for a libvirt error code (see the module's status policy)."""
    for codes, status in ((NOT_FOUND, 404), (CONFLICT, 409), (FORBIDDEN, 403),
                          (BAD_REQUEST, 400), (UNAVAILABLE, 503), (TIMEOUT, 504)):
        if code in codes:
            return status
    return 422


class Failure(Exception):
    """An operation failed: the HTTP status and the problem document's fields."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(f"{title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra

    @classmethod
    def from_libvirt(cls, exc: libvirt.libvirtError) -> Failure:
        """libvirt's error code, its name, its domain and its message."""
        code = exc.get_error_code() or 0
        return cls(status_for(code), error_name(code), exc.get_error_message() or str(exc),
                   libvirt_code=code, libvirt_error=error_name(code),
                   libvirt_domain=exc.get_error_domain() or 0)  # VIR_FROM_NONE

    @classmethod
    def of_migration(cls, exc: libvirt.libvirtError) -> Failure:
        """A migration's libvirt error: a refusal keeps its 4xx; any other error is a failure
        on the way (the destination's libvirtd, its QEMU, the stream between them, or a closed
        connection to it: libvirt's code does not say which), 502."""
        failure = cls.from_libvirt(exc)
        if failure.status in (422, 503):
            failure.status = 502
            failure.detail = (f"the migration failed between the hosts: {failure.detail} (the "
                              "domain's state on this host says where it runs)")
        return failure

    def as_dict(self) -> dict[str, Any]:
        """The fields an audit record keeps."""
        return {"status": self.status, "title": self.title, "detail": self.detail, **self.extra}


def resolve(op: Operation, conn: Any, args: dict[str, Any]) -> Any:
    """The object an operation's body takes: a domain, an interface, or the connection."""
    if op.target == "domain":
        how, key = domain_key(args["domain"])
        if how == "id":
            return conn.lookupByID(key)
        if how == "uuid":
            return conn.lookupByUUIDString(key)
        return conn.lookupByName(key)
    if op.target == "interface":
        key = args["interface"]
        if key.count(":") == 5:
            return conn.interfaceLookupByMACString(key)
        return conn.interfaceLookupByName(key)
    return conn


# The binding's objects an operation calls methods on (a missing method there is the binding's
# age, not a fault of virtmon's; a misspelt method would look the same, which the lab tests of
# the operations guard against).
BINDING_CLASSES = (libvirt.virConnect, libvirt.virDomain, libvirt.virInterface,
                   libvirt.virDomainSnapshot, libvirt.virDomainCheckpoint, libvirt.virStream)


def binding_versions() -> str:
    """The binding's and the running library's versions, for a function the binding lacks."""
    try:
        binding = importlib.metadata.version("libvirt-python")
    except importlib.metadata.PackageNotFoundError:  # a distribution's own package name
        binding = "(unknown version)"
    library = libvirt.getVersion()
    return (f"libvirt-python {binding} (libvirt "
            f"{library // 1000000}.{library // 1000 % 1000}.{library % 1000} here)")


REQUESTS_FAMILY = FamilySpec(
    "virtmon_control_requests_total", "counter",
    "Control API operations answered, by operation and HTTP status.", ("operation", "code"),
    unit="requests", source="control API operations answered, by HTTP status")


@dataclass(slots=True)
class ControlStats:
    """Counters for the status document and ``virtmon_control_requests_total``."""

    calls: int = 0
    failures: int = 0
    # (operation, HTTP status) -> answers; only operations of the table, so callers cannot
    # add series by asking for names that do not exist.
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)

    def families(self) -> list[MetricFamily]:
        """``virtmon_control_requests_total{operation,code}``."""
        family = REQUESTS_FAMILY.new()
        for (operation, code), count in sorted(self.answers.items()):
            family.add((operation, str(code)), count)
        return [family]


class Executor:
    """Runs operations for the control server."""

    def __init__(
        self, *, caller: LibvirtCaller, supervisor: ConnectionSupervisor,
        admin_helper: AdminHelper | None, bus: EventBus, allow_write: bool,
        deadline: float, pool_size: int = 2, alerts: AlertService | None = None,
        migration_destinations: Mapping[str, str] | None = None,
        migration_timeout: float = ControlConfig().migration_timeout,
        jobs: JobWatcher | None = None,
    ) -> None:
        self.caller = caller
        self.supervisor = supervisor
        self.admin_helper = admin_helper
        self.bus = bus
        self.allow_write = allow_write
        self.deadline = deadline
        self.alerts = alerts
        self.migration_destinations = dict(migration_destinations or {})
        self.migration_timeout = migration_timeout
        self.jobs = jobs
        settings: ConnectionSettings = supervisor.settings
        self.reads = ConnectionPool(replace(settings, readonly=True), pool_size)
        self.writes = ConnectionPool(replace(settings, readonly=False), pool_size)
        self.stats = ControlStats()

    async def reconfigure(self, control: ControlConfig) -> Restart:
        """Take a reloaded ``[control]``: the migration destinations and their deadline (the
        other keys wait for a restart and are kept as they run)."""
        self.migration_destinations = dict(control.migration_destinations)
        self.migration_timeout = control.migration_timeout
        return ()

    def status(self) -> dict[str, Any]:
        """The ``control`` part of the daemon's status (the streams are the server's)."""
        return {
            "allow_write": self.allow_write,
            "calls": self.stats.calls,
            "failures": self.stats.failures,
            "read_connections": self.reads.size,
            "write_connections": self.writes.size,
        }

    def privileged(self, op: Operation, role: str) -> bool:
        """Whether a call by ``role`` runs with more than a read-only libvirt connection."""
        return privileged(op, role, self.allow_write)

    async def run(self, op: Operation, args: dict[str, Any], role: str) -> Any:
        """The operation's JSON result for a caller with ``role``; raise :class:`Failure`.

        The caller's role has been checked against ``op.needs(args)`` already."""
        self.stats.calls += 1
        try:
            if op.target == "admin":
                return await self._admin(op, args)
            if op.target == "alerts":
                return await self._alerts(op, args)
            return await self._libvirt(op, args, role)
        except Failure:
            self.stats.failures += 1
            raise
        except Exception as exc:
            # virtmon's own fault, never the caller's: a problem document (and an audit record)
            # rather than aiohttp's bare 500, with the traceback in the log.
            self.stats.failures += 1
            log.exception("virtmon.control.operation_failed", operation=op.name)
            raise Failure(500, "Internal Server Error",
                          f"{op.name}: {type(exc).__name__}: {exc}") from None

    async def _libvirt(self, op: Operation, args: dict[str, Any], role: str) -> Any:
        def body(conn: Any) -> Any:
            # ``target`` stays referenced until the check: freeing a libvirt object is a libvirt
            # call too, and it would reset the error this thread recorded.
            target = resolve(op, conn, args)
            libvirt.virResetLastError()
            result = op.body(target, args)
            if result is None and libvirt.virGetLastError() is not None:
                # Some bindings answer None for a failure instead of raising (guestVcpus):
                # the error libvirt recorded in this thread is the answer.
                raise libvirt.libvirtError(f"{op.name}: libvirt failed")
            return jsonable(result)

        if op.needs(args) != "read" and not self.allow_write:
            raise Failure(403, "Forbidden", f"{op.name} needs the read-write connection "
                          "(with these arguments), and control.allow_write is off")
        if DESTINATION in op.params:
            args = {**args, DESTINATION_SETTINGS: self.destination(args[DESTINATION.name])}
        if not self.supervisor.connected:
            raise Failure(503, "Service Unavailable", "libvirt is not connected "
                          f"({self.supervisor.state.value}); try again shortly")
        pool = self.writes if self.privileged(op, role) else self.reads
        # A migration outlasts a request: past its deadline too the call is abandoned, and
        # libvirt completes the migration (domain.abort_job stops it).
        deadline = self.deadline
        if op.name in MIGRATIONS:
            deadline = self.migration_timeout
            if self.jobs is not None:  # its progress is exported from the watcher's next round
                self.jobs.expect(str(args["domain"]))
        try:
            return await self.caller.call_with_deadline(deadline, pool.run, body)
        except libvirt.libvirtError as exc:
            if op.name in MIGRATIONS and self.supervisor.connected:
                raise Failure.of_migration(exc) from None
            raise Failure.from_libvirt(exc) from None
        except CallTimeout as exc:
            raise Failure(504, "Gateway Timeout", f"{op.name}: {exc}; the call was abandoned "
                          "(libvirt cannot cancel it and may still complete it)") from None
        except (TooManyAbandoned, ConnectionBusy, ConnectionClosed) as exc:
            raise Failure(503, "Service Unavailable", str(exc)) from None
        except LookupError as exc:
            # libvirt-python looks typed-parameter names up in what libvirt offers before it
            # calls the setter and raises a bare LookupError for an unknown one: the caller's
            # mistake. A KeyError or IndexError is virtmon's own (500, below).
            if type(exc) is not LookupError:
                raise
            raise Failure(400, "Bad Request", f"{op.name}: {exc.args[0] if exc.args else exc}",
                          **typed_key(op, args)) from None
        except (ValueError, TypeError, OverflowError) as exc:
            # libvirt-python's own argument checks (a cpumap too wide, a bad typed param).
            raise Failure(400, "Bad Request", f"{op.name}: {exc}",
                          **typed_key(op, args)) from None
        except AttributeError as exc:
            if not isinstance(exc.obj, BINDING_CLASSES):
                raise
            # libvirt-python binds only the functions of the libvirt it was built against, and
            # the API documents are newer than some hosts' libvirt (graphicsReload came in
            # 10.2): the operation exists, this host cannot do it.
            raise Failure(501, "Not Implemented", f"{op.name}: not available on this host: "
                          f"{binding_versions()} has no {exc.name}()") from None

    def destination(self, name: str) -> ConnectionSettings:
        """How virtmon reaches a configured migration destination: its URI from
        ``control.migration_destinations`` (with the credentials that URI names), read-write,
        with the daemon's keepalive; the daemon's own SASL file (``libvirt.auth_file``) is not
        offered to another host. An unknown name is the caller's mistake (400)."""
        uri = self.migration_destinations.get(name)
        if uri is None:
            known = ", ".join(sorted(self.migration_destinations)) or "none configured"
            raise Failure(400, "Bad Request", f"destination: {name!r} is not one of "
                          f"control.migration_destinations ({known})", key=DESTINATION.name)
        return replace(self.supervisor.settings, uri=uri, readonly=False, auth_file=None)

    async def _admin(self, op: Operation, args: dict[str, Any]) -> Any:
        if self.admin_helper is None:
            raise Failure(503, "Service Unavailable",
                          "the admin helper is not running (collect.collectors.admin is off)")
        request = {k: v for k, v in op.body(None, args).items() if v is not None}
        try:
            result = await self.admin_helper.request(op.helper_op, request,
                                                     timeout=self.deadline)
        except AdminError as exc:
            if exc.code == HELPER_UNAVAILABLE:
                raise Failure(503, "Service Unavailable", exc.message) from None
            if exc.code == HELPER_TIMEOUT:
                raise Failure(504, "Gateway Timeout", exc.message) from None
            raise Failure(status_for(exc.code), error_name(exc.code), exc.message,
                          libvirt_code=exc.code, libvirt_error=error_name(exc.code),
                          libvirt_domain=exc.domain) from None
        return jsonable(result)

    async def _alerts(self, op: Operation, args: dict[str, Any]) -> Any:
        """virtmon's own alerts service: SQLite in a worker thread, then wake the deliveries."""
        if op.role != "read" and not self.allow_write:
            raise Failure(403, "Forbidden", f"{op.name} changes state, and "
                          "control.allow_write is off")
        service = self.alerts
        if service is None:
            raise Failure(503, "Service Unavailable", "the alerts service is not running")
        try:
            result = await anyio.to_thread.run_sync(op.body, service, args)
        except ArgumentError as exc:
            raise Failure(400, "Bad Request", str(exc), key=exc.key) from None
        except LookupError as exc:
            raise Failure(404, "Not Found", str(exc.args[0] if exc.args else exc)) from None
        except sqlite3.Error as exc:
            raise Failure(503, "Service Unavailable", f"the alert database: {exc}") from None
        if op.role != "read":
            service.changed()
        return jsonable(result)

    def audit(self, op: Operation, args: dict[str, Any], peer: Peer,
              outcome: dict[str, Any]) -> None:
        """One audit record: in the log and, as an ``audit`` event, in the journal."""
        shown = {k: "***" if k in REDACTED else _short(v) for k, v in args.items()}
        record = {"uid": peer.uid, "gid": peer.gid, "pid": peer.pid, "comm": peer.comm,
                  "operation": op.name, "role": op.role, "arguments": shown, **outcome}
        log.info("virtmon.control.audit", **record)
        domain = args.get("domain") if op.target == "domain" else None
        self.bus.publish(Event(
            time=time.time(), uri=self.supervisor.settings.uri, kind=AUDIT_KIND, name=op.name,
            detail="ok" if outcome.get("ok") else "failed",
            domain=str(domain) if domain is not None else None, payload=record,
        ))

    def close(self) -> None:
        """Close the idle connections (blocking; busy ones close when their call returns)."""
        self.reads.reset()
        self.writes.reset()


def privileged(op: Operation, role: str, allow_write: bool) -> bool:
    """Whether a call by a caller with ``role`` runs with more than a read-only libvirt
    connection: the read-write connection (write and admin callers, when ``allow_write`` is on)
    or the admin helper's connection to libvirt's root-only admin socket (every admin
    operation). The caller's role decides, never the operation."""
    if op.target == "admin":
        return True
    return op.target != "alerts" and allow_write and allows(role, "write")


def typed_key(op: Operation, args: dict[str, Any]) -> dict[str, str]:
    """``{"key": NAME}`` for the typed-parameters argument of a call that has one (libvirt-python
    checks those before it calls libvirt), else nothing."""
    typed = [p.name for p in op.params if p.kind == "typed" and args.get(p.name)]
    return {"key": typed[0]} if len(typed) == 1 else {}


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > AUDIT_TEXT_MAX:
        return value[:AUDIT_TEXT_MAX] + f"... ({len(value)} characters)"
    return value
