"""Opening, sharing and closing one libvirt connection (blocking: call from worker threads)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import libvirt

from virtmon.virt.eventloop import unwatched

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """How to reach libvirt and how to notice that it is gone."""

    uri: str
    readonly: bool = True
    open_timeout: float = 10.0
    keepalive_interval: int = 5
    keepalive_count: int = 3
    auth_file: Path | None = None
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


def read_credentials(path: Path) -> dict[str, str]:
    """SASL credentials from a file of ``username=...`` and ``password=...`` lines."""
    creds: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in {"username", "password"}:
            creds[key.strip()] = value.strip()
    return creds


def is_local(uri: str) -> bool:
    """Whether the URI reaches libvirt on this host, in-process or through a Unix socket
    (``qemu:///system``, ``test:///default``, ``test+unix:///default?socket=...``): this host's
    clocks are its clocks, and its death closes the socket at once, so no keepalive is needed
    to notice it. A URI urlsplit cannot read, or an empty one (libvirt's default may be
    remote), is not known to be local."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    driver, _plus, transport = parts.scheme.partition("+")
    return bool(driver) and transport in ("", "unix") and not parts.hostname


def open_connection(settings: ConnectionSettings, watched: bool = True) -> Any:
    """Open a libvirt connection (blocking: it hangs against a stopped daemon); ``watched``
    False: without a socket watch (see :func:`virtmon.virt.eventloop.unwatched`)."""
    if not watched:
        with unwatched():
            return open_connection(settings)
    flags = libvirt.VIR_CONNECT_RO if settings.readonly else 0
    if settings.auth_file is None:
        if settings.readonly:
            return libvirt.openReadOnly(settings.uri)
        return libvirt.open(settings.uri)
    creds = read_credentials(settings.auth_file)

    def answer(credentials: list[list[Any]], _opaque: object) -> int:
        for cred in credentials:
            if cred[0] == libvirt.VIR_CRED_AUTHNAME:
                cred[4] = creds.get("username", "")
            elif cred[0] == libvirt.VIR_CRED_PASSPHRASE:
                cred[4] = creds.get("password", "")
        return 0

    auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]
    return libvirt.openAuth(settings.uri, auth, flags)


class ConnectionClosed(RuntimeError):
    """The connection is being closed; no new call starts on it."""


class ConnectionBusy(RuntimeError):
    """Another call on the connection has not returned within the wait (a hung daemon)."""


class SharedConnection:
    """A libvirt connection used by one call at a time, and closed only when no call is inside.

    Two rules work around libvirt 9.0 client behaviour measured here (tests/integration): when
    keepalive declares a hung daemon dead while two threads are inside calls on one connection,
    the close callback never fires and the process later crashes in libvirt's client I/O loop; and
    closing a connection under a call still running on it crashes the same way. So calls are
    serialised (a call waits at most ``busy_wait`` seconds for the previous one, then gives up
    without touching libvirt), and the close is deferred to the thread that finishes the last call.
    Monitoring makes one bulk call per cycle, so serialising costs nothing measurable.
    """

    def __init__(self, conn: Any, busy_wait: float = 60.0) -> None:
        self.conn = conn
        self.busy_wait = busy_wait
        self._one_call = threading.Lock()
        self._lock = threading.Lock()
        self._users = 0
        self._closing = False
        self._callback_ids: list[int] = []

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(conn, *args)`` (blocking; in a worker thread)."""
        with self._lock:
            if self._closing:
                raise ConnectionClosed("the libvirt connection is closing")
            self._users += 1
        try:
            if not self._one_call.acquire(timeout=self.busy_wait):
                raise ConnectionBusy(f"a call on the connection is still blocked in libvirt "
                                     f"after {self.busy_wait:g} s")
            try:
                return fn(self.conn, *args)
            finally:
                self._one_call.release()
        finally:
            if self._release():
                close_connection(self.conn, self._callback_ids)

    def _release(self) -> bool:
        """One call fewer; True when it was the last one of a connection that is closing."""
        with self._lock:
            self._users -= 1
            return self._closing and self._users == 0

    def close(self, callback_ids: list[int]) -> None:
        """Deregister and close now, or when the last running call returns (blocking)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._callback_ids = callback_ids
            close_now = self._users == 0
        if close_now:
            close_connection(self.conn, callback_ids)


def keep_alive(conn: Any, settings: ConnectionSettings) -> None:
    """Turn on libvirt's keepalive as configured: a peer that stops answering becomes an error
    instead of a hung call. Local and test drivers refuse it, and do without."""
    if settings.keepalive_interval > 0:
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(settings.keepalive_interval, settings.keepalive_count)


def close_connection(conn: Any, callback_ids: list[int]) -> None:
    """Deregister and close; errors on a connection that is already dead are expected."""
    for callback_id in callback_ids:
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(callback_id)
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()
