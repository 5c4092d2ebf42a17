"""libvirt's admin library (libvirt-admin.so.0) and the parts of libvirt.so.0 it needs (errors,
typed parameters, the default event loop), through ctypes.

Only the helper process loads this: never next to libvirt-python (see :mod:`virtmon.admin`).
:class:`Library` holds the loaded libraries with every function's signature declared and the
chores every call shares: turning libvirt's last error into a
:class:`~virtmon.admin.protocol.HelperError`, freeing what libvirt allocated, reading and
writing typed parameters.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from virtmon.admin.protocol import ERR_INTERNAL_ERROR, ERR_INVALID_ARG, FROM_NONE, HelperError

# virTypedParameterType
_P_INT, _P_UINT, _P_LLONG, _P_ULLONG, _P_DOUBLE, _P_BOOLEAN, _P_STRING = range(1, 8)
_FIELD_LENGTH = 80

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


class TypedParam(ctypes.Structure):
    """virTypedParameter: 96 bytes (field[80], int type, 8-byte union)."""

    _fields_ = (("field", ctypes.c_char * _FIELD_LENGTH), ("type", ctypes.c_int), ("value", _Value))


class _Error(ctypes.Structure):
    """The leading members of virError (the rest are never read)."""

    _fields_ = (("code", ctypes.c_int), ("domain", ctypes.c_int), ("message", ctypes.c_char_p))


_P = ctypes.c_void_p
# virAdmConnectCloseFunc(conn, reason, opaque) and virErrorFunc(userData, error).
CLOSE_FUNC = ctypes.CFUNCTYPE(None, _P, ctypes.c_int, _P)
ERROR_FUNC = ctypes.CFUNCTYPE(None, _P, _P)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "virAdmGetVersion": (ctypes.c_int, [ctypes.POINTER(ctypes.c_ulonglong)]),
    "virAdmConnectOpen": (_P, [ctypes.c_char_p, ctypes.c_uint]),
    "virAdmConnectClose": (ctypes.c_int, [_P]),
    "virAdmConnectIsAlive": (ctypes.c_int, [_P]),
    "virAdmConnectGetURI": (_P, [_P]),
    "virAdmConnectGetLibVersion": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_ulonglong)]),
    "virAdmConnectRegisterCloseCallback": (ctypes.c_int, [_P, CLOSE_FUNC, _P, _P]),
    "virAdmConnectUnregisterCloseCallback": (ctypes.c_int, [_P, CLOSE_FUNC]),
    "virAdmConnectListServers": (ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.c_uint]),
    "virAdmConnectLookupServer": (_P, [_P, ctypes.c_char_p, ctypes.c_uint]),
    "virAdmServerFree": (ctypes.c_int, [_P]),
    "virAdmServerGetName": (ctypes.c_char_p, [_P]),
    "virAdmServerGetThreadPoolParameters": (
        ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.POINTER(ctypes.c_int), ctypes.c_uint]),
    "virAdmServerSetThreadPoolParameters": (
        ctypes.c_int, [_P, ctypes.POINTER(TypedParam), ctypes.c_int, ctypes.c_uint]),
    "virAdmServerGetClientLimits": (
        ctypes.c_int, [_P, ctypes.POINTER(_P), ctypes.POINTER(ctypes.c_int), ctypes.c_uint]),
    "virAdmServerSetClientLimits": (
        ctypes.c_int, [_P, ctypes.POINTER(TypedParam), ctypes.c_int, ctypes.c_uint]),
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


class Library:
    """libvirt-admin.so.0 (`adm`), libvirt.so.0 (`virt`) and libc (`libc`, for ``free``), each
    function's signature declared; loading raises OSError when a library is missing."""

    def __init__(self) -> None:
        # By its soname: ctypes.util.find_library would run ldconfig in a subprocess and load
        # subprocess, tempfile and shutil for it (~1.5 MiB of the helper's memory).
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.libc.free.argtypes = [_P]
        self.libc.free.restype = None
        self.virt = ctypes.CDLL("libvirt.so.0")
        self.adm = ctypes.CDLL("libvirt-admin.so.0")
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(self.adm, name)
            fn.restype, fn.argtypes = restype, argtypes
        self.virt.virGetLastError.restype = ctypes.POINTER(_Error)
        self.virt.virGetLastError.argtypes = []
        self.virt.virResetLastError.argtypes = []
        self.virt.virTypedParamsFree.argtypes = [_P, ctypes.c_int]
        self.virt.virTypedParamsFree.restype = None
        self.virt.virSetErrorFunc.argtypes = [_P, ERROR_FUNC]

    def error(self) -> HelperError:
        """libvirt's last error on this thread."""
        err = self.virt.virGetLastError()
        if not err:
            return HelperError(ERR_INTERNAL_ERROR, FROM_NONE, "libvirt failed without an error")
        message = (err.contents.message or b"").decode(errors="replace")
        return HelperError(err.contents.code, err.contents.domain, message)

    def check(self, rc: int) -> int:
        """``rc`` when it is not a failure (< 0), else libvirt's error raised."""
        if rc < 0:
            raise self.error()
        return rc

    def take_string(self, ptr: int | None) -> str:
        """A string libvirt allocated for the caller, freed (NULL: libvirt's error raised)."""
        if not ptr:
            raise self.error()
        try:
            return ctypes.string_at(ptr).decode(errors="replace")
        finally:
            self.libc.free(ptr)

    def get_params(self, fn: Callable[..., int], obj: int) -> dict[str, Any]:
        """The typed parameters a ``virAdm*Get*`` function fills in, by name."""
        params, nparams = _P(), ctypes.c_int()
        self.check(fn(obj, ctypes.byref(params), ctypes.byref(nparams), 0))
        try:
            array = ctypes.cast(params, ctypes.POINTER(TypedParam))
            return dict(_param_value(array[i]) for i in range(nparams.value))
        finally:
            self.virt.virTypedParamsFree(params, nparams)

    def set_params(self, fn: Callable[..., int], obj: int, values: Any) -> None:
        """Pass ``values`` (a JSON object) to a ``virAdm*Set*`` function as typed parameters."""
        if not isinstance(values, dict) or not values:
            raise HelperError(ERR_INVALID_ARG, FROM_NONE, "'params' must be a non-empty object")
        array = (TypedParam * len(values))()
        keep: list[Any] = []  # string buffers must outlive the call
        for slot, (name, value) in zip(array, values.items(), strict=True):
            _fill_param(slot, name, value, keep)
        self.check(fn(obj, array, len(values), 0))

    def list(self, fn: Callable[..., int], obj: int, free: Callable[[int], int]) -> list[int]:
        """The objects a ``virAdm*List*`` function returns; the caller frees each with
        ``free`` (the array itself is freed here)."""
        array = _P()
        count = self.check(fn(obj, ctypes.byref(array), 0))
        items = ctypes.cast(array, ctypes.POINTER(_P))
        try:
            return [int(items[i]) for i in range(count)]
        except BaseException:
            for i in range(count):
                free(items[i])
            raise
        finally:
            self.libc.free(array)


def _param_value(param: TypedParam) -> tuple[str, Any]:
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


def _fill_param(slot: TypedParam, name: Any, value: Any, keep: list[Any]) -> None:
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
