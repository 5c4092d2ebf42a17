"""Read-only connections for the collection cycle: one call in flight on each.

libvirt cannot cancel a call. When a cycle's call overruns (a domain's monitor that stopped
answering, a stuck job), the next cycle must still start on time and, thanks to NOWAIT, skip
only the domains that the stuck call holds. It cannot share the stuck call's connection: libvirt
9.0's client crashes when keepalive declares a connection dead while two threads are inside calls
on it (see SharedConnection). So each cycle borrows a connection nobody is using, opening a new
one when all are busy, up to ``max_size``; the events connection is never used here.

A pool whose calls are all reads (``reads``), on a local socket, opens its connections without a
socket watch (:func:`virtmon.virt.eventloop.unwatched`): each RPC is then the calling thread's
alone, at a third of the CPU of a watched one, with nothing posted to the loop. Such a connection
has no keepalive, which a local peer does not need (its death closes the socket), and notices a
restarted libvirtd only when its next call fails; that read is made once more on a new
connection, so a restart costs no cycle.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import libvirt

from virtmon.virt.handle import (
    ConnectionBusy,
    ConnectionSettings,
    is_local,
    keep_alive,
    open_connection,
)

P = ParamSpec("P")
T = TypeVar("T")


class ConnectionPool:
    """Idle connections to reuse, busy ones counted; a dead one is dropped.

    ``reads``: every call made through the pool only reads, so making it twice is harmless.
    """

    def __init__(self, settings: ConnectionSettings, max_size: int, reads: bool = False) -> None:
        self.settings = settings
        self.max_size = max_size
        self.watched = not (reads and is_local(settings.uri))
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
        for attempt in range(2):
            conn, generation, reused = self._take()
            healthy = True
            try:
                return fn(conn, *args, **kwargs)
            except libvirt.libvirtError:
                healthy = _alive(conn)
                # An unwatched connection learns that libvirtd went away (a restart) only from
                # a call: a read that failed on a reused connection now dead is made once more,
                # on a new one (the idle ones share its fate). Any other failure is the answer.
                if healthy or self.watched or not reused or attempt:
                    raise
            finally:
                self._give_back(conn, generation, healthy)
            self._drop_idle()
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _take(self) -> tuple[Any, int, bool]:
        """A connection, the pool's generation, and whether the connection was used before."""
        with self._lock:
            generation = self._generation
            while self._idle:
                conn = self._idle.pop()
                # isAlive is local: a connection libvirt knows dropped (a restart: a watched
                # one sees it on its socket, an unwatched one from a failed call) is closed.
                if _alive(conn):
                    self._busy += 1
                    return conn, generation, True
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
            if self._busy >= self.max_size:
                raise ConnectionBusy(f"all {self.max_size} collection connections are busy")
            self._busy += 1
        try:
            conn = open_connection(self.settings, watched=self.watched)
        except BaseException:
            with self._lock:
                self._busy -= 1
            raise
        if self.watched:
            keep_alive(conn, self.settings)
        return conn, generation, False

    def _give_back(self, conn: Any, generation: int, healthy: bool) -> None:
        with self._lock:
            self._busy -= 1
            keep = healthy and generation == self._generation
            if keep:
                self._idle.append(conn)
        if not keep:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def _drop_idle(self, new_generation: bool = False) -> None:
        """Close the idle connections (blocking); ``new_generation``: busy ones too, once their
        call returns."""
        with self._lock:
            self._generation += new_generation
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def reset(self) -> None:
        """Close idle connections; busy ones are closed when their call returns (blocking)."""
        self._drop_idle(new_generation=True)


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
