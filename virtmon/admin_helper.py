"""The admin helper: libvirt's admin API over ctypes, spoken as JSON lines on stdin/stdout.

Run as ``python -m virtmon.admin_helper [--uri URI]`` by `virtmon.virt.admin_client.AdminHelper`.
It imports only the standard library, never `libvirt`: libvirt-python and libvirt-admin.so
register the same GLib types and a process that loads both crashes (shared/docs/LAB.md).
Loading libvirt.so.0 through ctypes is fine; it gives the error API and the default event loop.

Protocol, one JSON object per line:

- request ``{"id": 1, "op": "threadpool_get", "args": {"server": "libvirtd"}}``
- reply ``{"id": 1, "ok": true, "result": ...}`` or
  ``{"id": 1, "ok": false, "error": {"code": 95, "domain": 62, "message": "..."}}``;
  `code` and `domain` are libvirt's virErrorNumber/virErrorDomain (domain 0 for errors the
  helper itself raises about a malformed request)
- unsolicited ``{"event": "helper_ready" | "admin_connection_lost" |
  "admin_connection_restored", ...}``

Requests are served one at a time in arrival order; the close callback runs on the event loop
thread and only writes an event line. End of stdin ends the helper.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

DEFAULT_URI = "libvirtd:///system"

# virErrorNumber / virErrorDomain values used for errors raised by the helper itself.
ERR_INTERNAL_ERROR = 1
ERR_NO_SUPPORT = 3
ERR_INVALID_ARG = 8
FROM_NONE = 0

# virTypedParameterType
_P_INT, _P_UINT, _P_LLONG, _P_ULLONG, _P_DOUBLE, _P_BOOLEAN, _P_STRING = range(1, 8)
_FIELD_LENGTH = 80

TRANSPORTS = {0: "unix", 1: "tcp", 2: "tls"}
CLOSE_REASONS = {0: "error", 1: "eof", 2: "keepalive", 3: "client"}

# Every settable limit of the admin API is a VIR_TYPED_PARAM_UINT.
_UINT_PARAMS = frozenset(
    {"minWorkers", "maxWorkers", "prioWorkers", "nclients_max", "nclients_unauth_max"}
)
_MAX_UINT = 2**32 - 1


class _Value(ctypes.Union):
    _fields_ = (
        ("i", ctypes.c_int),
        ("ui", ctypes.c_uint),
        ("l", ctypes.c_longlong),
        ("ul", ctypes.c_ulonglong),
        ("d", ctypes.c_double),
        ("b", ctypes.c_char),
        ("s", ctypes.c_void_p),
    )


class _TypedParam(ctypes.Structure):
    """virTypedParameter: 96 bytes (field[80], int type, 8-byte union)."""

    _fields_ = (("field", ctypes.c_char * _FIELD_LENGTH), ("type", ctypes.c_int), ("value", _Value))


class _Error(ctypes.Structure):
    """The leading members of virError (the rest are never read)."""

    _fields_ = (("code", ctypes.c_int), ("domain", ctypes.c_int), ("message", ctypes.c_char_p))


class HelperError(Exception):
    """A failure to report in a reply: libvirt's error code, domain and message."""

    def __init__(self, code: int, domain: int, message: str) -> None:
        super().__init__(message)
        self.code, self.domain, self.message = code, domain, message

    def as_json(self) -> dict[str, Any]:
        """The reply's `error` object."""
        return {"code": self.code, "domain": self.domain, "message": self.message}


_P = ctypes.c_void_p
_CLOSE_FUNC = ctypes.CFUNCTYPE(None, _P, ctypes.c_int, _P)
_ERROR_FUNC = ctypes.CFUNCTYPE(None, _P, _P)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "virAdmGetVersion": (ctypes.c_int, [ctypes.POINTER(ctypes.c_ulonglong)]),
    "virAdmConnectOpen": (_P, [ctypes.c_char_p, ctypes.c_uint]),
    "virAdmConnectClose": (ctypes.c_int, [_P]),
    "virAdmConnectIsAlive": (ctypes.c_int, [_P]),
    "virAdmConnectGetURI": (_P, [_P]),
    "virAdmConnectGetLibVersion": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_ulonglong)]),
    "virAdmConnectRegisterCloseCallback": (ctypes.c_int, [_P, _CLOSE_FUNC, _P, _P]),
    "virAdmConnectUnregisterCloseCallback": (ctypes.c_int, [_P, _CLOSE_FUNC]),
    "virAdmConnectListServers": (ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.c_uint]),
    "virAdmConnectLookupServer": (_P, [_P, ctypes.c_char_p, ctypes.c_uint]),
    "virAdmServerFree": (ctypes.c_int, [_P]),
    "virAdmServerGetName": (ctypes.c_char_p, [_P]),
    "virAdmServerGetThreadPoolParameters": (
        ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.POINTER(ctypes.c_int), ctypes.c_uint]),
    "virAdmServerSetThreadPoolParameters": (
        ctypes.c_int, [_P, ctypes.POINTER(_TypedParam), ctypes.c_int, ctypes.c_uint]),
    "virAdmServerGetClientLimits": (
        ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.POINTER(ctypes.c_int), ctypes.c_uint]),
    "virAdmServerSetClientLimits": (
        ctypes.c_int, [_P, ctypes.POINTER(_TypedParam), ctypes.c_int, ctypes.c_uint]),
    "virAdmServerListClients": (ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.c_uint]),
    "virAdmServerLookupClient": (_P, [_P, ctypes.c_ulonglong, ctypes.c_uint]),
    "virAdmServerUpdateTlsFiles": (ctypes.c_int, [_P, ctypes.c_uint]),
    "virAdmClientFree": (ctypes.c_int, [_P]),
    "virAdmClientGetID": (ctypes.c_ulonglong, [_P]),
    "virAdmClientGetTimestamp": (ctypes.c_longlong, [_P]),
    "virAdmClientGetTransport": (ctypes.c_int, [_P]),
    "virAdmClientGetInfo": (
        ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.POINTER(ctypes.c_int), ctypes.c_uint]),
    "virAdmClientClose": (ctypes.c_int, [_P, ctypes.c_uint]),
    "virAdmConnectGetLoggingFilters": (ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.c_uint]),
    "virAdmConnectSetLoggingFilters": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_uint]),
    "virAdmConnectGetLoggingOutputs": (ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.c_uint]),
    "virAdmConnectSetLoggingOutputs": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_uint]),
    "virAdmConnectSetDaemonTimeout": (ctypes.c_int, [_P, ctypes.c_uint, ctypes.c_uint]),
}


class Writer:
    """Writes whole JSON lines to stdout from the request and event loop threads."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        """Write one message as one line, flushed."""
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                os._exit(0)  # the daemon is gone: nothing left to report to


class Admin:
    """The admin library, the one connection and the ops that use it; see `OPS` for the table.

    Invariant: `_conn` is NULL or an open connection with `_close_cb` registered on it; `_lost`
    is set by the close callback (event loop thread) and consumed by `_connection()` (request
    thread), which closes the dead connection and opens a new one.
    """

    def __init__(self, uri: str, writer: Writer) -> None:
        self.uri = uri
        self._writer = writer
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._libc.free.argtypes = [_P]
        self._libc.free.restype = None
        self._virt = ctypes.CDLL("libvirt.so.0")
        self._adm = ctypes.CDLL("libvirt-admin.so.0")
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(self._adm, name)
            fn.restype, fn.argtypes = restype, argtypes
        self._virt.virGetLastError.restype = ctypes.POINTER(_Error)
        self._virt.virGetLastError.argtypes = []
        self._virt.virResetLastError.argtypes = []
        self._virt.virTypedParamsFree.argtypes = [_P, ctypes.c_int]
        self._virt.virTypedParamsFree.restype = None
        self._virt.virSetErrorFunc.argtypes = [_P, _ERROR_FUNC]
        # Keep references: libvirt calls these from its threads for the helper's lifetime.
        self._quiet = _ERROR_FUNC(lambda _opaque, _err: None)
        self._close_cb = _CLOSE_FUNC(self._on_close)
        self._conn: int | None = None
        self._lost = False
        self._opened_once = False
        self._lock = threading.Lock()
        self.version = 0

    def start(self) -> int:
        """Silence libvirt's stderr output, start the event loop thread; return the lib version."""
        self._virt.virSetErrorFunc(None, self._quiet)
        if self._adm.virAdmInitialize() < 0 or self._virt.virEventRegisterDefaultImpl() < 0:
            raise self._error()
        loop = threading.Thread(target=self._event_loop, name="virt-event-loop", daemon=True)
        loop.start()
        version = ctypes.c_ulonglong()
        self._check(self._adm.virAdmGetVersion(ctypes.byref(version)))
        self.version = version.value
        return self.version

    def _event_loop(self) -> None:
        while True:
            self._virt.virEventRunDefaultImpl()

    def _on_close(self, _conn: int | None, reason: int, _opaque: int | None) -> None:
        # Event loop thread: no libvirt call here, only a flag and a line.
        with self._lock:
            self._lost = True
        self._writer.send(
            {"event": "admin_connection_lost", "reason": CLOSE_REASONS.get(reason, str(reason)),
             "uri": self.uri}
        )

    def _error(self) -> HelperError:
        err = self._virt.virGetLastError()
        if not err:
            return HelperError(ERR_INTERNAL_ERROR, FROM_NONE, "libvirt failed without an error")
        message = (err.contents.message or b"").decode(errors="replace")
        return HelperError(err.contents.code, err.contents.domain, message)

    def _check(self, rc: int) -> int:
        if rc < 0:
            raise self._error()
        return rc

    def _connection(self) -> int:
        """The open connection, reopened if it was lost or found dead."""
        with self._lock:
            lost, self._lost = self._lost, False
        if self._conn is not None and (lost or self._adm.virAdmConnectIsAlive(self._conn) != 1):
            self.close()
            lost = True
        if self._conn is None:
            conn = self._adm.virAdmConnectOpen(self.uri.encode(), 0)
            if not conn:
                raise self._error()
            if self._adm.virAdmConnectRegisterCloseCallback(conn, self._close_cb, None, None) < 0:
                error = self._error()
                self._adm.virAdmConnectClose(conn)
                raise error
            self._conn = conn
            if lost or self._opened_once:
                self._writer.send({"event": "admin_connection_restored", "uri": self.uri})
            self._opened_once = True
        return self._conn

    def close(self) -> None:
        """Close the connection if open (ignoring errors from a dead one)."""
        if self._conn is not None:
            self._adm.virAdmConnectUnregisterCloseCallback(self._conn, self._close_cb)
            self._adm.virAdmConnectClose(self._conn)
            self._conn = None
        self._virt.virResetLastError()

    def _done(self, rc: int) -> None:
        self._check(rc)

    def _take_string(self, ptr: int | None) -> str:
        if not ptr:
            raise self._error()
        try:
            return ctypes.string_at(ptr).decode(errors="replace")
        finally:
            self._libc.free(ptr)

    # -- typed parameters ------------------------------------------------------------------

    def _get_params(self, fn: Callable[..., int], obj: int) -> dict[str, Any]:
        params, nparams = _P(), ctypes.c_int()
        self._check(fn(obj, ctypes.byref(params), ctypes.byref(nparams), 0))
        try:
            array = ctypes.cast(params, ctypes.POINTER(_TypedParam))
            return dict(_param_value(array[i]) for i in range(nparams.value))
        finally:
            self._virt.virTypedParamsFree(params, nparams)

    def _set_params(self, fn: Callable[..., int], obj: int, values: Any) -> None:
        if not isinstance(values, dict) or not values:
            raise HelperError(ERR_INVALID_ARG, FROM_NONE, "'params' must be a non-empty object")
        array = (_TypedParam * len(values))()
        keep: list[Any] = []  # string buffers must outlive the call
        for slot, (name, value) in zip(array, values.items(), strict=True):
            _fill_param(slot, name, value, keep)
        self._check(fn(obj, array, len(values), 0))

    # -- objects ---------------------------------------------------------------------------

    def _server(self, args: dict[str, Any]) -> int:
        name = _arg(args, "server", str)
        srv = self._adm.virAdmConnectLookupServer(self._connection(), name.encode(), 0)
        if not srv:
            raise self._error()
        return int(srv)

    def _with_server(self, args: dict[str, Any], use: Callable[[int], Any]) -> Any:
        srv = self._server(args)
        try:
            return use(srv)
        finally:
            self._adm.virAdmServerFree(srv)

    def _with_client(self, args: dict[str, Any], use: Callable[[int], Any]) -> Any:
        client_id = _arg(args, "id", int)
        if client_id < 0:
            raise HelperError(ERR_INVALID_ARG, FROM_NONE, "'id' must be a non-negative integer")

        def lookup(srv: int) -> Any:
            client = self._adm.virAdmServerLookupClient(srv, client_id, 0)
            if not client:
                raise self._error()
            try:
                return use(client)
            finally:
                self._adm.virAdmClientFree(client)

        return self._with_server(args, lookup)

    def _client_summary(self, client: int, info: bool) -> dict[str, Any]:
        transport = self._check(self._adm.virAdmClientGetTransport(client))
        summary: dict[str, Any] = {
            "id": self._adm.virAdmClientGetID(client),
            "timestamp": self._adm.virAdmClientGetTimestamp(client),
            "transport": TRANSPORTS.get(transport, str(transport)),
        }
        if info:
            try:
                summary["info"] = self._get_params(self._adm.virAdmClientGetInfo, client)
            except HelperError as exc:
                # One client's details failing must not fail the listing. libvirtd refuses the
                # info of a client whose process has gone while its connection lives on ("No
                # identity information available for client"): it is listed without them.
                if exc.code != 1:  # VIR_ERR_INTERNAL_ERROR, whatever the message's language;
                    raise  # a lost connection or RPC failure carries another code
                summary["info"] = {}
                summary["info_error"] = exc.message
        return summary

    def _list(self, fn: Callable[..., int], obj: int, free: Callable[[int], int]) -> list[int]:
        array = _P()
        count = self._check(fn(obj, ctypes.byref(array), 0))
        items = ctypes.cast(array, ctypes.POINTER(_P))
        try:
            return [int(items[i]) for i in range(count)]
        except BaseException:
            for i in range(count):
                free(items[i])
            raise
        finally:
            self._libc.free(array)

    def _clients(self, srv: int, info: bool) -> list[dict[str, Any]]:
        clients = self._list(self._adm.virAdmServerListClients, srv, self._adm.virAdmClientFree)
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
                self._adm.virAdmClientFree(client)
        return result

    def server_names(self) -> list[str]:
        """virAdmConnectListServers + virAdmServerGetName."""
        servers = self._list(
            self._adm.virAdmConnectListServers, self._connection(), self._adm.virAdmServerFree
        )
        try:
            return [(self._adm.virAdmServerGetName(s) or b"").decode() for s in servers]
        finally:
            for srv in servers:
                self._adm.virAdmServerFree(srv)

    def server_state(self, srv: int, info: bool) -> dict[str, Any]:
        """What the metrics need about one server."""
        return {
            "threadpool": self._get_params(self._adm.virAdmServerGetThreadPoolParameters, srv),
            "client_limits": self._get_params(self._adm.virAdmServerGetClientLimits, srv),
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
            if not lost and self._adm.virAdmConnectIsAlive(self._conn) == 1:
                raise
            return handler(self, args)


def _param_value(param: _TypedParam) -> tuple[str, Any]:
    name = param.field.decode(errors="replace")
    kind, value = param.type, param.value
    if kind == _P_INT:
        return name, value.i
    if kind == _P_UINT:
        return name, value.ui
    if kind == _P_LLONG:
        return name, value.l
    if kind == _P_ULLONG:
        return name, value.ul
    if kind == _P_DOUBLE:
        return name, value.d
    if kind == _P_BOOLEAN:
        return name, value.b != b"\0"
    if kind == _P_STRING:
        return name, ctypes.string_at(value.s).decode(errors="replace") if value.s else None
    return name, None


def _fill_param(slot: _TypedParam, name: Any, value: Any, keep: list[Any]) -> None:
    raw = str(name).encode()
    if not raw or len(raw) >= _FIELD_LENGTH:
        raise HelperError(ERR_INVALID_ARG, FROM_NONE, f"bad parameter name {name!r}")
    slot.field = raw
    if name in _UINT_PARAMS or (isinstance(value, int) and not isinstance(value, bool)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_UINT:
            raise HelperError(
                ERR_INVALID_ARG, FROM_NONE, f"parameter {name!r} must be an unsigned int, "
                f"not {value!r}")
        slot.type, slot.value.ui = _P_UINT, value
    elif isinstance(value, bool):
        slot.type, slot.value.b = _P_BOOLEAN, b"\1" if value else b"\0"
    elif isinstance(value, float):
        slot.type, slot.value.d = _P_DOUBLE, value
    elif isinstance(value, str):
        buffer = ctypes.create_string_buffer(value.encode())
        keep.append(buffer)
        slot.type, slot.value.s = _P_STRING, ctypes.addressof(buffer)
    else:
        raise HelperError(ERR_INVALID_ARG, FROM_NONE, f"parameter {name!r}: bad value {value!r}")


def _arg(args: dict[str, Any], name: str, kind: type[Any]) -> Any:
    value = args.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HelperError(
            ERR_INVALID_ARG, FROM_NONE, f"argument {name!r} must be {kind.__name__}, not {value!r}"
        )
    return value


def _lib_version(a: Admin, _args: dict[str, Any]) -> int:
    version = ctypes.c_ulonglong()
    a._check(a._adm.virAdmConnectGetLibVersion(a._connection(), ctypes.byref(version)))
    return version.value


def _get_string(fn_name: str) -> Callable[[Admin, dict[str, Any]], str]:
    def get(a: Admin, _args: dict[str, Any]) -> str:
        out = _P()
        a._check(getattr(a._adm, fn_name)(a._connection(), ctypes.byref(out), 0))
        return "" if not out.value else a._take_string(out.value)
    return get


def _set_string(fn_name: str, arg: str) -> Callable[[Admin, dict[str, Any]], None]:
    def set_(a: Admin, args: dict[str, Any]) -> None:
        a._check(getattr(a._adm, fn_name)(a._connection(), _arg(args, arg, str).encode(), 0))
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
    return a._take_string(a._adm.virAdmConnectGetURI(a._connection()))


OPS: dict[str, Callable[[Admin, dict[str, Any]], Any]] = {
    "get_version": lambda a, _: a.version,
    "connect_open": _connect_open,
    "connect_close": lambda a, _: a.close(),
    "connect_is_alive": lambda a, _: a._conn is not None and not a._lost
    and a._adm.virAdmConnectIsAlive(a._conn) == 1,
    "connect_get_uri": lambda a, _: a._take_string(a._adm.virAdmConnectGetURI(a._connection())),
    "connect_get_lib_version": _lib_version,
    "server_list": lambda a, _: a.server_names(),
    "server_lookup": lambda a, args: a._with_server(
        args, lambda s: {"name": (a._adm.virAdmServerGetName(s) or b"").decode()}),
    "threadpool_get": lambda a, args: a._with_server(
        args, lambda s: a._get_params(a._adm.virAdmServerGetThreadPoolParameters, s)),
    "threadpool_set": lambda a, args: a._with_server(
        args, lambda s: a._set_params(
            a._adm.virAdmServerSetThreadPoolParameters, s, args.get("params"))),
    "client_limits_get": lambda a, args: a._with_server(
        args, lambda s: a._get_params(a._adm.virAdmServerGetClientLimits, s)),
    "client_limits_set": lambda a, args: a._with_server(
        args, lambda s: a._set_params(a._adm.virAdmServerSetClientLimits, s, args.get("params"))),
    "client_list": lambda a, args: a._with_server(
        args, lambda s: a._clients(s, info=bool(args.get("info", False)))),
    "client_lookup": lambda a, args: a._with_client(
        args, lambda c: a._client_summary(c, info=False)),
    "client_info": lambda a, args: a._with_client(
        args, lambda c: a._get_params(a._adm.virAdmClientGetInfo, c)),
    "client_close": lambda a, args: a._with_client(
        args, lambda c: a._done(a._adm.virAdmClientClose(c, 0))),
    "logging_filters_get": _get_string("virAdmConnectGetLoggingFilters"),
    "logging_filters_set": _set_string("virAdmConnectSetLoggingFilters", "filters"),
    "logging_outputs_get": _get_string("virAdmConnectGetLoggingOutputs"),
    "logging_outputs_set": _set_string("virAdmConnectSetLoggingOutputs", "outputs"),
    "daemon_timeout_set": lambda a, args: a._done(a._adm.virAdmConnectSetDaemonTimeout(
        a._connection(), _arg(args, "timeout", int), 0)),
    "tls_files_update": lambda a, args: a._with_server(
        args, lambda s: a._done(a._adm.virAdmServerUpdateTlsFiles(s, 0))),
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


def main(argv: list[str] | None = None) -> int:
    """Serve requests from stdin until it closes."""
    parser = argparse.ArgumentParser(prog="python -m virtmon.admin_helper")
    parser.add_argument("--uri", default=DEFAULT_URI, help="admin URI (default: %(default)s)")
    options = parser.parse_args(argv)
    writer = Writer(sys.stdout.buffer)
    try:
        admin = Admin(options.uri, writer)
        version = admin.start()
    except (OSError, AttributeError, HelperError) as exc:
        writer.send({"event": "helper_failed", "message": str(exc)})
        return 1
    writer.send({"event": "helper_ready", "pid": os.getpid(), "version": version,
                 "uri": options.uri})
    for line in sys.stdin.buffer:
        if line.strip():
            writer.send(handle_line(admin, line))
    admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
