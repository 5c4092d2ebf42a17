"""Read-only connections for the collection cycle: one call in flight on each.

libvirt cannot cancel a call. When a cycle's call overruns (a domain's monitor that stopped
answering, a stuck job), the next cycle must still start on time and, thanks to NOWAIT, skip
only the domains that the stuck call holds. It cannot share the stuck call's connection: libvirt
9.0's client crashes when keepalive declares a connection dead while two threads are inside calls
on it (see SharedConnection). So each cycle borrows a connection nobody is using, opening a new
one when all are busy, up to ``max_size``; the events connection is never used here.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import libvirt

from virtmon.virt.handle import ConnectionBusy, ConnectionSettings, keep_alive, open_connection

P = ParamSpec("P")
T = TypeVar("T")


class ConnectionPool:
    """Idle connections to reuse, busy ones counted; a dead one is dropped."""

    def __init__(self, settings: ConnectionSettings, max_size: int) -> None:
        self.settings = settings
        self.max_size = max_size
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._busy = 0
        self._generation = 0

    @property
    def size(self) -> int:
        """Connections open now (idle and busy)."""
        with self._lock:
            return len(self._idle) + self._busy

    def run(self, fn: Callable[Concatenate[Any, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(conn, *args, **kwargs)`` on a connection of its own (blocking; in a worker
        thread)."""
        conn, generation = self._take()
        healthy = True
        try:
            return fn(conn, *args, **kwargs)
        except libvirt.libvirtError:
            healthy = _alive(conn)
            raise
        finally:
            self._give_back(conn, generation, healthy)

    def _take(self) -> tuple[Any, int]:
        with self._lock:
            generation = self._generation
            while self._idle:
                conn = self._idle.pop()
                # isAlive is local: a connection libvirtd dropped (a restart) is not reused.
                if _alive(conn):
                    self._busy += 1
                    return conn, generation
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
            if self._busy >= self.max_size:
                raise ConnectionBusy(f"all {self.max_size} collection connections are busy")
            self._busy += 1
        try:
            conn = open_connection(self.settings)
        except BaseException:
            with self._lock:
                self._busy -= 1
            raise
        keep_alive(conn, self.settings)
        return conn, generation

    def _give_back(self, conn: Any, generation: int, healthy: bool) -> None:
        with self._lock:
            self._busy -= 1
            keep = healthy and generation == self._generation
            if keep:
                self._idle.append(conn)
        if not keep:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def reset(self) -> None:
        """Close idle connections; busy ones are closed when their call returns (blocking)."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
