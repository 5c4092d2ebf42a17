"""Running blocking libvirt calls off the event loop: worker threads, a capacity limit, deadlines.

libvirt cannot cancel a call. A call that overruns its deadline is abandoned: the caller gets
:class:`CallTimeout` and moves on, while the worker thread stays blocked until libvirt returns. The
number of abandoned calls still outstanding is bounded; past the bound new calls are refused at once
(:class:`TooManyAbandoned`) instead of piling up threads behind a hung daemon.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread

P = ParamSpec("P")
T = TypeVar("T")


class CallTimeout(TimeoutError):
    """A libvirt call overran its deadline and was abandoned."""

    def __init__(self, name: str, deadline: float) -> None:
        super().__init__(f"libvirt call {name} overran its deadline of {deadline:g} s")
        self.name = name
        self.deadline = deadline


class TooManyAbandoned(RuntimeError):
    """Too many abandoned calls are still blocked in libvirt; no new call is started."""


class LibvirtCaller:
    """Runs libvirt calls in worker threads with a capacity limiter and a deadline each.

    The limiter is sized below libvirtd's ``max_client_requests`` (default 5) so that virtmon never
    queues requests inside libvirtd itself. An abandoned call gives its limiter slot back at once
    (the thread it blocks is counted in ``abandoned_outstanding`` instead).
    """

    def __init__(
        self, capacity: int = 4, default_deadline: float = 30.0, max_abandoned: int = 4
    ) -> None:
        self._limiter = anyio.CapacityLimiter(capacity)
        self.default_deadline = default_deadline
        self.max_abandoned = max_abandoned
        self._lock = threading.Lock()
        self._abandoned_outstanding = 0
        self.abandoned_total = 0

    @property
    def abandoned_outstanding(self) -> int:
        """Abandoned calls whose threads are still blocked in libvirt."""
        with self._lock:
            return self._abandoned_outstanding

    async def call(
        self,
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker thread within the default deadline."""
        return await self.call_with_deadline(self.default_deadline, fn, *args, **kwargs)

    async def call_with_deadline(
        self,
        deadline: float,
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn`` in a worker thread; raise :class:`CallTimeout` after ``deadline`` seconds."""
        name = getattr(fn, "__qualname__", repr(fn))
        if self.abandoned_outstanding >= self.max_abandoned:
            raise TooManyAbandoned(
                f"{self.abandoned_outstanding} abandoned libvirt calls are still blocked; "
                f"not starting {name}"
            )
        # "started" matters: a call cancelled while still waiting for the limiter never runs.
        state = {"started": False, "abandoned": False, "done": False}

        def run() -> T:
            with self._lock:
                state["started"] = True
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    state["done"] = True
                    if state["abandoned"]:
                        self._abandoned_outstanding -= 1

        with anyio.move_on_after(deadline) as scope:
            return await anyio.to_thread.run_sync(
                run, limiter=self._limiter, abandon_on_cancel=True
            )
        # Only the deadline gets here (a TimeoutError the call raises itself propagates as is).
        assert scope.cancelled_caught
        with self._lock:
            if state["started"] and not state["done"]:
                state["abandoned"] = True
                self._abandoned_outstanding += 1
                self.abandoned_total += 1
        raise CallTimeout(name, deadline)
