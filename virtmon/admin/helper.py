"""The admin helper: libvirt's admin API (:mod:`virtmon.admin.binding`), spoken as JSON lines
(:mod:`virtmon.admin.protocol`) on stdin/stdout.

Run as ``python -m virtmon.admin.helper [--uri URI]`` by
:class:`virtmon.admin.client.AdminHelper`. It imports only the standard library and its two
siblings, never ``libvirt``: libvirt-python and libvirt-admin.so register the same GLib types and
a process that loads both crashes (docs/adr/0002). Loading libvirt.so.0 through ctypes is fine;
it gives the error API and the default event loop.

Requests are served one at a time in arrival order; the close callback runs on the event loop
thread and only writes an event line. End of stdin ends the helper.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from virtmon.admin.binding import CLOSE_FUNC, ERROR_FUNC, Library
from virtmon.admin.protocol import (
    CLOSE_REASONS,
    CONNECTION_LOST,
    CONNECTION_RESTORED,
    DEFAULT_URI,
    ERR_INTERNAL_ERROR,
    ERR_INVALID_ARG,
    ERR_NO_SUPPORT,
    FROM_NONE,
    HELPER_FAILED,
    HELPER_READY,
    TRANSPORTS,
    HelperError,
    encode,
    name_of,
)


class Writer:
    """Writes whole JSON lines to stdout from the request and event loop threads."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        """Write one message as one line, flushed."""
        line = encode(message)
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                os._exit(0)  # the daemon is gone: nothing left to report to


class Admin:
    """The one admin connection and the ops that use it; see `OPS` for the table.

    Invariant: `_conn` is NULL or an open connection with `_close_cb` registered on it; `_lost`
    is set by the close callback (event loop thread) and consumed by `_connection()` (request
    thread), which closes the dead connection and opens a new one.
    """

    def __init__(self, uri: str, writer: Writer) -> None:
        self.uri = uri
        self._writer = writer
        self.lib = Library()
        # Keep references: libvirt calls these from its threads for the helper's lifetime.
        self._quiet = ERROR_FUNC(lambda _opaque, _err: None)
        self._close_cb = CLOSE_FUNC(self._on_close)
        self._conn: int | None = None
        self._lost = False
        self._opened_once = False
        self._lock = threading.Lock()
        self.version = 0

    def start(self) -> int:
        """Silence libvirt's stderr output, start the event loop thread; return the lib version."""
        self.lib.virt.virSetErrorFunc(None, self._quiet)
        if self.lib.adm.virAdmInitialize() < 0 or self.lib.virt.virEventRegisterDefaultImpl() < 0:
            raise self.lib.error()
        loop = threading.Thread(target=self._event_loop, name="virt-event-loop", daemon=True)
        loop.start()
        version = ctypes.c_ulonglong()
        self.lib.check(self.lib.adm.virAdmGetVersion(ctypes.byref(version)))
        self.version = version.value
        return self.version

    def _event_loop(self) -> None:
        while True:
            self.lib.virt.virEventRunDefaultImpl()

    def _on_close(self, _conn: int | None, reason: int, _opaque: int | None) -> None:
        # Event loop thread: no libvirt call here, only a flag and a line.
        with self._lock:
            self._lost = True
        self._writer.send(
            {"event": CONNECTION_LOST, "reason": name_of(CLOSE_REASONS, reason),
             "uri": self.uri}
        )

    def _connection(self) -> int:
        """The open connection, reopened if it was lost or found dead."""
        with self._lock:
            lost, self._lost = self._lost, False
        if self._conn is not None and (lost or self.lib.adm.virAdmConnectIsAlive(self._conn) != 1):
            self.close()
            lost = True
        if self._conn is None:
            conn = self.lib.adm.virAdmConnectOpen(self.uri.encode(), 0)
            if not conn:
                raise self.lib.error()
            adm = self.lib.adm
            if adm.virAdmConnectRegisterCloseCallback(conn, self._close_cb, None, None) < 0:
                error = self.lib.error()
                self.lib.adm.virAdmConnectClose(conn)
                raise error
            self._conn = conn
            if lost or self._opened_once:
                self._writer.send({"event": CONNECTION_RESTORED, "uri": self.uri})
            self._opened_once = True
        return self._conn

    def close(self) -> None:
        """Close the connection if open (ignoring errors from a dead one)."""
        if self._conn is not None:
            self.lib.adm.virAdmConnectUnregisterCloseCallback(self._conn, self._close_cb)
            self.lib.adm.virAdmConnectClose(self._conn)
            self._conn = None
        self.lib.virt.virResetLastError()

    def _done(self, rc: int) -> None:
        self.lib.check(rc)

    # -- objects ---------------------------------------------------------------------------

    def _server(self, args: dict[str, Any]) -> int:
        name = _arg(args, "server", str)
        srv = self.lib.adm.virAdmConnectLookupServer(self._connection(), name.encode(), 0)
        if not srv:
            raise self.lib.error()
        return int(srv)

    def _with_server(self, args: dict[str, Any], use: Callable[[int], Any]) -> Any:
        srv = self._server(args)
        try:
            return use(srv)
        finally:
            self.lib.adm.virAdmServerFree(srv)

    def _with_client(self, args: dict[str, Any], use: Callable[[int], Any]) -> Any:
        client_id = _arg(args, "id", int)
        if client_id < 0:
            raise HelperError(ERR_INVALID_ARG, FROM_NONE, "'id' must be a non-negative integer")

        def lookup(srv: int) -> Any:
            client = self.lib.adm.virAdmServerLookupClient(srv, client_id, 0)
            if not client:
                raise self.lib.error()
            try:
                return use(client)
            finally:
                self.lib.adm.virAdmClientFree(client)

        return self._with_server(args, lookup)

    def _client_summary(self, client: int, info: bool) -> dict[str, Any]:
        transport = self.lib.check(self.lib.adm.virAdmClientGetTransport(client))
        summary: dict[str, Any] = {
            "id": self.lib.adm.virAdmClientGetID(client),
            "timestamp": self.lib.adm.virAdmClientGetTimestamp(client),
            "transport": name_of(TRANSPORTS, transport),
        }
        if info:
            try:
                summary["info"] = self.lib.get_params(self.lib.adm.virAdmClientGetInfo, client)
            except HelperError as exc:
                # One client's details failing must not fail the listing. libvirtd refuses the
                # info of a client whose process has gone while its connection lives on ("No
                # identity information available for client"): it is listed without them.
                if exc.code != 1:  # VIR_ERR_INTERNAL_ERROR, whatever the message's language;
                    raise  # a lost connection or RPC failure carries another code
                summary["info"] = {}
                summary["info_error"] = exc.message
        return summary

    def _clients(self, srv: int, info: bool) -> list[dict[str, Any]]:
        adm = self.lib.adm
        clients = self.lib.list(adm.virAdmServerListClients, srv, adm.virAdmClientFree)
        result = []
        try:
            for client in clients:
                try:
                    result.append(self._client_summary(client, info))
                except HelperError as exc:
                    if exc.code != 96:  # VIR_ERR_NO_CLIENT: it left while we listed
                        raise
        finally:
            for client in clients:
                self.lib.adm.virAdmClientFree(client)
        return result

    def server_names(self) -> list[str]:
        """virAdmConnectListServers + virAdmServerGetName."""
        servers = self.lib.list(
            self.lib.adm.virAdmConnectListServers, self._connection(), self.lib.adm.virAdmServerFree
        )
        try:
            return [(self.lib.adm.virAdmServerGetName(s) or b"").decode() for s in servers]
        finally:
            for srv in servers:
                self.lib.adm.virAdmServerFree(srv)

    def server_state(self, srv: int, info: bool) -> dict[str, Any]:
        """What the metrics need about one server."""
        return {
            "threadpool": self.lib.get_params(
                self.lib.adm.virAdmServerGetThreadPoolParameters, srv),
            "client_limits": self.lib.get_params(self.lib.adm.virAdmServerGetClientLimits, srv),
            "clients": self._clients(srv, info=info),
        }

    def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        """Run one op; a failure that left the connection dead is retried once on a new one."""
        handler = OPS.get(op)
        if handler is None:
            raise HelperError(ERR_NO_SUPPORT, FROM_NONE, f"unknown op {op!r}")
        try:
            return handler(self, args)
        except HelperError:
            if op not in _RETRYABLE or self._conn is None:
                raise
            with self._lock:
                lost = self._lost
            if not lost and self.lib.adm.virAdmConnectIsAlive(self._conn) == 1:
                raise
            return handler(self, args)


def _arg(args: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = args.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HelperError(
            ERR_INVALID_ARG, FROM_NONE, f"argument {name!r} must be {kind.__name__}, not {value!r}"
        )
    return value


def _lib_version(a: Admin, _args: dict[str, Any]) -> int:
    version = ctypes.c_ulonglong()
    a.lib.check(a.lib.adm.virAdmConnectGetLibVersion(a._connection(), ctypes.byref(version)))
    return version.value


def _get_string(fn_name: str) -> Callable[[Admin, dict[str, Any]], str]:
    def get(a: Admin, _args: dict[str, Any]) -> str:
        out = ctypes.c_void_p()
        a.lib.check(getattr(a.lib.adm, fn_name)(a._connection(), ctypes.byref(out), 0))
        return "" if not out.value else a.lib.take_string(out.value)
    return get


def _set_string(fn_name: str, arg: str) -> Callable[[Admin, dict[str, Any]], None]:
    def set_(a: Admin, args: dict[str, Any]) -> None:
        a.lib.check(getattr(a.lib.adm, fn_name)(a._connection(), _arg(args, arg, str).encode(), 0))
    return set_


def _snapshot(a: Admin, args: dict[str, Any]) -> dict[str, Any]:
    # client_info=false skips one virAdmClientGetInfo round trip per client (no readonly flag).
    info = bool(args.get("client_info", True))
    servers = {}
    for name in a.server_names():
        try:
            servers[name] = a._with_server({"server": name}, lambda s: a.server_state(s, info))
        except HelperError as exc:
            if exc.code != 95:  # VIR_ERR_NO_SERVER: gone since the list
                raise
    return {"servers": servers}


def _connect_open(a: Admin, args: dict[str, Any]) -> str:
    if "uri" in args and _arg(args, "uri", str) != a.uri:
        a.close()
        a.uri = args["uri"]
    return a.lib.take_string(a.lib.adm.virAdmConnectGetURI(a._connection()))


OPS: dict[str, Callable[[Admin, dict[str, Any]], Any]] = {
    "get_version": lambda a, _: a.version,
    "connect_open": _connect_open,
    "connect_close": lambda a, _: a.close(),
    "connect_is_alive": lambda a, _: a._conn is not None and not a._lost
    and a.lib.adm.virAdmConnectIsAlive(a._conn) == 1,
    "connect_get_uri": lambda a, _: a.lib.take_string(
        a.lib.adm.virAdmConnectGetURI(a._connection())),
    "connect_get_lib_version": _lib_version,
    "server_list": lambda a, _: a.server_names(),
    "server_lookup": lambda a, args: a._with_server(
        args, lambda s: {"name": (a.lib.adm.virAdmServerGetName(s) or b"").decode()}),
    "threadpool_get": lambda a, args: a._with_server(
        args, lambda s: a.lib.get_params(a.lib.adm.virAdmServerGetThreadPoolParameters, s)),
    "threadpool_set": lambda a, args: a._with_server(
        args, lambda s: a.lib.set_params(
            a.lib.adm.virAdmServerSetThreadPoolParameters, s, args.get("params"))),
    "client_limits_get": lambda a, args: a._with_server(
        args, lambda s: a.lib.get_params(a.lib.adm.virAdmServerGetClientLimits, s)),
    "client_limits_set": lambda a, args: a._with_server(
        args, lambda s: a.lib.set_params(
            a.lib.adm.virAdmServerSetClientLimits, s, args.get("params"))),
    "client_list": lambda a, args: a._with_server(
        args, lambda s: a._clients(s, info=bool(args.get("info", False)))),
    "client_lookup": lambda a, args: a._with_client(
        args, lambda c: a._client_summary(c, info=False)),
    "client_info": lambda a, args: a._with_client(
        args, lambda c: a.lib.get_params(a.lib.adm.virAdmClientGetInfo, c)),
    "client_close": lambda a, args: a._with_client(
        args, lambda c: a._done(a.lib.adm.virAdmClientClose(c, 0))),
    "logging_filters_get": _get_string("virAdmConnectGetLoggingFilters"),
    "logging_filters_set": _set_string("virAdmConnectSetLoggingFilters", "filters"),
    "logging_outputs_get": _get_string("virAdmConnectGetLoggingOutputs"),
    "logging_outputs_set": _set_string("virAdmConnectSetLoggingOutputs", "outputs"),
    "daemon_timeout_set": lambda a, args: a._done(a.lib.adm.virAdmConnectSetDaemonTimeout(
        a._connection(), _arg(args, "timeout", int), 0)),
    "tls_files_update": lambda a, args: a._with_server(
        args, lambda s: a._done(a.lib.adm.virAdmServerUpdateTlsFiles(s, 0))),
    "snapshot": _snapshot,
}
# Reads are safe to repeat after the connection died under them.
_RETRYABLE = frozenset(
    {"connect_get_uri", "connect_get_lib_version", "server_list", "server_lookup",
     "threadpool_get", "client_limits_get", "client_list", "client_lookup", "client_info",
     "logging_filters_get", "logging_outputs_get", "snapshot"}
)


def handle_line(admin: Admin, line: bytes) -> dict[str, Any]:
    """Turn one request line into its reply; never raises."""
    request_id: Any = None
    try:
        try:
            request = json.loads(line)
        except ValueError as exc:
            raise HelperError(ERR_INVALID_ARG, FROM_NONE, f"malformed JSON: {exc}") from None
        if not isinstance(request, dict):
            raise HelperError(ERR_INVALID_ARG, FROM_NONE, "a request must be a JSON object")
        request_id = request.get("id")
        op, args = request.get("op"), request.get("args", {})
        if not isinstance(op, str):
            raise HelperError(ERR_INVALID_ARG, FROM_NONE, "'op' must be a string")
        if not isinstance(args, dict):
            raise HelperError(ERR_INVALID_ARG, FROM_NONE, "'args' must be an object")
        return {"id": request_id, "ok": True, "result": admin.dispatch(op, args)}
    except HelperError as exc:
        return {"id": request_id, "ok": False, "error": exc.as_json()}
    except Exception as exc:  # a bug here must cost one reply, not the helper
        message = f"helper error: {exc!r}"
        return {"id": request_id, "ok": False,
                "error": {"code": ERR_INTERNAL_ERROR, "domain": FROM_NONE, "message": message}}


USAGE = f"usage: python -m virtmon.admin.helper [--uri URI]  (default URI: {DEFAULT_URI})\n"


def parse_uri(argv: list[str]) -> str:
    """The admin URI of ``--uri URI`` or ``--uri=URI`` (else the default); usage on stderr and
    exit 2 for anything else, exit 0 for ``--help``. By hand: argparse (and the gettext and
    locale it loads) would be half a MiB of the helper's memory for one option."""
    uri = DEFAULT_URI
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            sys.exit(0)
        if arg == "--uri" and rest:
            uri = rest.pop(0)
        elif arg.startswith("--uri="):
            uri = arg.removeprefix("--uri=")
        else:
            sys.stderr.write(f"{USAGE}error: unexpected argument {arg!r}\n")
            sys.exit(2)
    return uri


def main(argv: list[str] | None = None) -> int:
    """Serve requests from stdin until it closes."""
    uri = parse_uri(sys.argv[1:] if argv is None else argv)
    writer = Writer(sys.stdout.buffer)
    try:
        admin = Admin(uri, writer)
        version = admin.start()
    except (OSError, AttributeError, HelperError) as exc:
        writer.send({"event": HELPER_FAILED, "message": str(exc)})
        return 1
    writer.send({"event": HELPER_READY, "pid": os.getpid(), "version": version,
                 "uri": uri})
    for line in sys.stdin.buffer:
        if line.strip():
            writer.send(handle_line(admin, line))
    admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
