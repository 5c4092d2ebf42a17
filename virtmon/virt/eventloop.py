"""libvirt's event implementation on the running asyncio loop, safe to call from any thread.

libvirt invokes the event hooks (add/update/remove handle and timeout) from whichever thread makes
a libvirt call: its client code updates the connection's socket watch from the calling thread.
libvirtaio's hooks call ``loop.add_reader`` and ``asyncio.ensure_future`` directly, which are not
thread-safe; the race is silent without asyncio's debug mode and loses events (shared/docs/LAB.md).

:class:`ThreadSafeEventImpl` is registered with libvirt instead and delegates to libvirtaio's
implementation on the loop thread:

- the watch/timer id libvirt gets back is allocated synchronously, under a lock, in the caller's
  thread;
- a removed id is marked dead at once, so it is never dispatched again, even if libvirtaio still
  has it until the removal runs on the loop;
- every change to libvirtaio's state is marshalled onto the loop in call order (one FIFO for
  every thread: :func:`call_on_loop`), so an update never overtakes the add it refers to;
- updates are coalesced per id: while one is queued for an id, a later update only replaces the
  value it will apply (the latest wins), and a value equal to the one libvirtaio already has is
  not applied again. Each libvirt RPC from a worker thread turns the connection's watch off and
  back on (two updates); this makes that one queued call, and no epoll change, instead of two
  cross-thread wake-ups and two re-registrations (the profile in docs/PERFORMANCE.md);
- an update made on the loop thread while nothing is queued is applied at once, as libvirtaio
  alone would: libvirt's dispatch of each event arms and disarms its timer from the loop, and
  each of those went through the loop's queue (the floor of an event's CPU is ~12 % lower
  without that trip: docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import libvirtaio
import structlog

log = structlog.get_logger("virtmon.virt.eventloop")

# The running loop of the calling thread or None, without raising (C-accelerated in asyncio).
_running_loop = asyncio._get_running_loop

_registered: ThreadSafeEventImpl | None = None

# Set in a thread while it opens a connection that is to have no socket watch (:func:`unwatched`).
_opening_unwatched = threading.local()


@contextlib.contextmanager
def unwatched() -> Iterator[None]:
    """Connections this thread opens in the body get no watch on their socket.

    libvirt's client then does each call's I/O in the calling thread alone: no update of a watch
    posted to the loop before and after every RPC (a cross-thread wake-up each, about two thirds
    of the CPU an RPC costs here: docs/PERFORMANCE.md). Such a connection has no keepalive and
    cannot carry events; it learns that libvirtd went away from its next call, which fails.
    """
    _opening_unwatched.active = True
    try:
        yield
    finally:
        _opening_unwatched.active = False


def call_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> bool:
    """Append ``fn(*args)`` to the loop's FIFO from any thread; False if the loop is closed.

    The one way onto the loop thread for libvirt's callbacks and hooks. From the loop thread
    itself (libvirtaio dispatches there) a plain ``call_soon``: the same queue in the same order,
    but no self-pipe write and wake-up; from any other thread ``call_soon_threadsafe``. Never
    run at once, even on the loop: a call must not overtake those queued before it.
    """
    try:
        if _running_loop() is loop:
            loop.call_soon(fn, *args)
        else:
            loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        # The loop is closed: the process is exiting and nothing will dispatch again.
        return False
    return True


class ThreadSafeEventImpl:
    """libvirt event hooks that may be called from any thread; libvirtaio does the work on the loop.

    Invariants (guarded by ``_lock``):
    - ``_live`` holds the ids libvirt may still use: added and not yet removed;
    - ``_inner_ids`` maps a live or removed-but-not-yet-applied id to libvirtaio's own id, and is
      written only on the loop thread, when the add is applied;
    - ``_queued`` counts changes scheduled on the loop but not yet applied (``drain`` waits for 0);
    - ``_updates`` holds, for an id with an update queued on the loop, the latest value to apply
      (and libvirtaio's update function); at most one queued update per id, so a coalesced value
      rides on the earliest slot, which is still behind the id's add; an id removed meanwhile is
      no longer live when the slot runs, and nothing is applied;
    - ``_applied`` (loop thread only) is the value libvirtaio holds for each applied id.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._inner = libvirtaio.virEventAsyncIOImpl(loop=loop)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._live: set[int] = set()
        self._inner_ids: dict[int, int] = {}
        self._queued = 0
        self._updates: dict[int, tuple[Callable[[int, int], None], int]] = {}
        self._applied: dict[int, int] = {}

    # -- libvirt's hooks (any thread) -----------------------------------------------------

    def add_handle(self, fd: int, events: int, cb: Callable[..., None], opaque: Any) -> int:
        """virEventAddHandleFunc: watch ``fd``; the id is returned before the loop applies it.
        -1 (refused) while the calling thread opens an :func:`unwatched` connection."""
        if getattr(_opening_unwatched, "active", False):
            return -1
        watch = self._allocate()

        def dispatch(_inner: int, fd_: int, events_: int, opaque_: Any) -> None:
            if watch in self._live:
                cb(watch, fd_, events_, opaque_)

        self._schedule(self._apply_add_handle, watch, fd, events, dispatch, opaque)
        return watch

    def update_handle(self, watch: int, events: int) -> None:
        """virEventUpdateHandleFunc: change the events a watch waits for."""
        self._update(watch, self._inner._update_handle, events)

    def remove_handle(self, watch: int) -> int:
        """virEventRemoveHandleFunc: the watch is dead at once; libvirtaio frees it on the loop."""
        if not self._kill(watch):
            return -1
        self._schedule(self._apply_remove, watch, self._inner._remove_handle)
        return 0

    def add_timeout(self, timeout: int, cb: Callable[..., None], opaque: Any) -> int:
        """virEventAddTimeoutFunc: a timer every ``timeout`` ms (-1 disabled, 0 immediately)."""
        timer = self._allocate()

        def dispatch(_inner: int, opaque_: Any) -> None:
            if timer in self._live:
                cb(timer, opaque_)

        self._schedule(self._apply_add_timeout, timer, timeout, dispatch, opaque)
        return timer

    def update_timeout(self, timer: int, timeout: int) -> None:
        """virEventUpdateTimeoutFunc: change a timer's period."""
        self._update(timer, self._inner._update_timeout, timeout)

    def remove_timeout(self, timer: int) -> int:
        """virEventRemoveTimeoutFunc: the timer is dead at once; libvirtaio frees it on the loop."""
        if not self._kill(timer):
            return -1
        self._schedule(self._apply_remove, timer, self._inner._remove_timeout)
        return 0

    # -- loop side ------------------------------------------------------------------------

    def _apply_add_handle(
        self, watch: int, fd: int, events: int, cb: Callable[..., None], opaque: Any
    ) -> None:
        self._inner_ids[watch] = self._inner._add_handle(fd, events, cb, opaque)
        self._applied[watch] = events

    def _apply_add_timeout(
        self, timer: int, timeout: int, cb: Callable[..., None], opaque: Any
    ) -> None:
        self._inner_ids[timer] = self._inner._add_timeout(timeout, cb, opaque)
        self._applied[timer] = timeout

    def _apply_update(self, ident: int) -> None:
        with self._lock:
            update, value = self._updates.pop(ident)
            live = ident in self._live
        if live:
            self._set(ident, update, value)

    def _set(self, ident: int, update: Callable[[int, int], None], value: int) -> None:
        """Give libvirtaio the value of an applied id, unless it holds it already."""
        inner = self._inner_ids.get(ident)
        if inner is not None and self._applied.get(ident) != value:
            update(inner, value)
            self._applied[ident] = value

    def _apply_remove(self, ident: int, remove: Callable[[int], int]) -> None:
        self._applied.pop(ident, None)
        inner = self._inner_ids.pop(ident, None)
        if inner is not None:
            remove(inner)

    # -- plumbing -------------------------------------------------------------------------

    def _allocate(self) -> int:
        with self._lock:
            ident = next(self._ids)
            self._live.add(ident)
            return ident

    def _kill(self, ident: int) -> bool:
        with self._lock:
            if ident not in self._live:
                return False
            self._live.discard(ident)
            return True

    def _update(self, ident: int, update: Callable[[int, int], None], value: int) -> None:
        """Apply an update of a live id at once on the loop thread when nothing is queued (there
        is nothing it could overtake: libvirtaio's own way); else queue it, or fold it into the
        one already queued for that id."""
        with self._lock:
            if ident not in self._live:
                return
            if self._queued == 0 and _running_loop() is self._loop:
                # Under the lock: no hook of another thread can queue in between.
                self._set(ident, update, value)
                return
            queued = ident in self._updates
            self._updates[ident] = (update, value)
            if queued:
                return
            self._queued += 1
        if not self._post(self._apply_update, (ident,)):
            with self._lock:
                self._updates.pop(ident, None)
                self._queued -= 1

    def _schedule(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._queued += 1
        if not self._post(fn, args):
            with self._lock:
                self._queued -= 1

    def _post(self, fn: Callable[..., None], args: tuple[Any, ...]) -> bool:
        """Append ``fn(*args)`` to the loop's FIFO; False if the loop is closed."""
        return call_on_loop(self._loop, self._run, fn, args)

    def _run(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("virtmon.eventloop.hook_failed", hook=fn.__name__)
        finally:
            with self._lock:
                self._queued -= 1

    # -- lifecycle ------------------------------------------------------------------------

    def register(self) -> None:
        """Make this libvirt's event implementation (possible once per process)."""
        libvirt.virEventRegisterImpl(
            self.add_handle, self.update_handle, self.remove_handle,
            self.add_timeout, self.update_timeout, self.remove_timeout,
        )

    def _settled(self) -> bool:
        """Every scheduled change applied, and libvirtaio freed everything that was removed.

        libvirtaio counts, in ``_pending``, the handles and timers it holds that have not been
        freed yet. Once our queue is empty that is exactly the live ones: a larger count means
        free callbacks still waiting for the loop. (libvirtaio's own ``drain`` waits for zero,
        which never comes while another connection of the process is open.)
        """
        with self._lock:
            return self._queued == 0 and self._inner._pending == len(self._live)

    def is_idle(self) -> bool:
        """True when no watch or timer is live and nothing is left to apply or free."""
        with self._lock:
            return not self._live and self._queued == 0 and self._inner._pending == 0

    async def drain(self, poll: float = 0.005) -> None:
        """Wait until every scheduled change is applied and libvirtaio freed what was removed."""
        # Polled: libvirtaio offers no notification for "everything removed is freed".
        while not self._settled():  # noqa: ASYNC110
            await asyncio.sleep(poll)

    @property
    def live_count(self) -> int:
        """How many watches and timers libvirt holds now."""
        with self._lock:
            return len(self._live)


def register_event_impl() -> ThreadSafeEventImpl:
    """Register the implementation on the running loop, once per process, before any ``open``.

    libvirt accepts one event implementation per process; a second call returns the first one
    (it must have been registered on this same loop).
    """
    global _registered
    loop = asyncio.get_running_loop()
    if _registered is None:
        impl = ThreadSafeEventImpl(loop)
        impl.register()
        # libvirt-python would print exceptions of its own and libvirt's errors to stderr.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _registered = impl
    elif _registered._loop is not loop:
        raise RuntimeError("libvirt's event implementation is bound to another event loop")
    return _registered
