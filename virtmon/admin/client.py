"""The daemon's side of the admin helper: supervise the child, send requests, relay its events.

libvirt-python has no admin binding and libvirt-admin.so cannot share a process with it, so the
admin API lives in a child process (`virtmon.admin.helper`) that speaks JSON lines. `AdminHelper`
starts it, restarts it with exponential backoff whenever it dies, and never lets its death raise
into the daemon: a request made while it is down fails at once with `AdminHelperUnavailable`.
Everything here is non-blocking anyio I/O on pipes; no libvirt call runs in this process.

The helper serves requests one at a time, so a request that overruns its deadline while the
helper is working on it means the helper is stuck in libvirt (a hung daemon): the helper is
killed and restarted rather than left to hold up every request behind it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import structlog
from anyio.abc import Process, TaskGroup, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from virtmon.admin.protocol import DEFAULT_URI, HELPER_READY, MAX_LINE, encode
from virtmon.backoff import backoff

__all__ = [
    "DEFAULT_URI",
    "HELPER_TIMEOUT",
    "HELPER_UNAVAILABLE",
    "AdminError",
    "AdminEvent",
    "AdminHelper",
    "AdminHelperUnavailable",
    "AdminTimeout",
]

log = structlog.get_logger("virtmon.admin.client")

# Codes for failures of the helper itself; libvirt's own error codes are all >= 0.
HELPER_UNAVAILABLE = -1
HELPER_TIMEOUT = -2
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# -S: no site module. The helper needs only the standard library and virtmon (found through
# PYTHONPATH), and site's work (the virtualenv's .pth files and what they import) is ~0.9 MiB
# of the helper's private memory.
HELPER_COMMAND = (sys.executable, "-S", "-m", "virtmon.admin.helper")


class AdminError(Exception):
    """An admin request failed: libvirt's error code, message and error domain."""

    def __init__(self, code: int, message: str, domain: int = 0) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.domain = domain


class AdminHelperUnavailable(AdminError):
    """The helper is not running (starting, backing off, stopped) or died during the request."""

    def __init__(self, message: str) -> None:
        super().__init__(HELPER_UNAVAILABLE, message)


class AdminTimeout(AdminError):
    """The request got no reply within its deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(HELPER_TIMEOUT, message)


@dataclass(frozen=True, slots=True)
class AdminEvent:
    """Something that happened without a request.

    `kind` is one of ``admin_connection_lost`` (detail ``reason``: error, eof, keepalive,
    client), ``admin_connection_restored``, ``helper_started`` (``pid``, ``restarts``) and
    ``helper_died`` (``returncode``).
    """

    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Pending:
    done: anyio.Event = field(default_factory=anyio.Event)
    reply: dict[str, Any] | None = None
    failure: AdminError | None = None


class AdminHelper:
    """Supervises one `virtmon.admin.helper` child and multiplexes requests over its pipes.

    Use ``async with AdminHelper(...) as helper`` or ``await task_group.start(helper.run)``.

    Invariants: `_process` is the running child once it said ``helper_ready``, else None;
    every id in `_pending` belongs to a request written (or being written) to that child,
    and all are failed and removed when it dies; `_state_changed` is set and replaced on every
    change of `_process` or `_starting`, which is what waiting requests wait for.
    """

    def __init__(
        self,
        uri: str = DEFAULT_URI,
        *,
        command: Sequence[str] | None = None,
        max_in_flight: int = 4,
        backoff_initial: float = 0.2,
        backoff_max: float = 30.0,
        stable_after: float = 10.0,
        start_timeout: float = 10.0,
        on_event: Callable[[AdminEvent], None] | None = None,
    ) -> None:
        self.uri = uri
        self._command = list(command or HELPER_COMMAND)
        self._slots = anyio.Semaphore(max_in_flight)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._stable_after = stable_after
        self._start_timeout = start_timeout
        self._on_event = on_event
        self._subscribers: list[MemoryObjectSendStream[AdminEvent]] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._write_lock = anyio.Lock()
        self._process: Process | None = None
        self._state_changed = anyio.Event()
        self._task_status: TaskStatus[None] | None = None
        self._starting = True
        self._stopped = False
        self._last_failure = "the admin helper has not started yet"
        self._task_group: TaskGroup | None = None
        self.restarts = 0
        self.events_dropped = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        await self._task_group.start(self.run)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel("admin helper closing")
        # The supervisor never raises, so the body's own exception (if any) is the one to
        # propagate, unwrapped by an ExceptionGroup.
        await self._task_group.__aexit__(None, None, None)
        return None

    @property
    def pid(self) -> int | None:
        """The running helper's pid, if it is ready."""
        return self._process.pid if self._process is not None else None

    def status(self) -> dict[str, Any]:
        """The ``admin_helper`` part of the daemon's status: its pid (None while it is down),
        restarts so far and, while it is down, why."""
        return {"enabled": True, "pid": self.pid, "restarts": self.restarts,
                "last_failure": None if self.pid is not None else self._last_failure}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep a helper running until cancelled; `started` once the first attempt is over."""
        failures = 0  # in a row: each waits longer (virtmon.backoff)
        self._task_status = task_status
        try:
            while True:
                self._starting = True
                started_at = time.monotonic()
                try:
                    await self._run_once()
                except Exception as exc:  # the helper's fate never reaches the daemon
                    self._last_failure = f"admin helper failed: {exc!r}"
                    log.error("virtmon.admin.helper.failed", error=repr(exc))
                self._starting = False
                self._changed()
                self._report_started()
                if time.monotonic() - started_at >= self._stable_after:
                    failures = 0
                failures += 1
                pause = backoff(failures, self._backoff_initial, self._backoff_max)
                log.info("virtmon.admin.helper.backoff", seconds=round(pause, 3))
                await anyio.sleep(pause)
                self.restarts += 1
        finally:
            self._stopped = True
            self._changed()
            for send in self._subscribers:
                send.close()
            self._subscribers.clear()

    def _report_started(self) -> None:
        if self._task_status is not None:
            self._task_status.started()
            self._task_status = None

    def _changed(self) -> None:
        """Wake every request waiting for the helper's state to change."""
        self._state_changed.set()
        self._state_changed = anyio.Event()

    async def _run_once(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        process = await anyio.open_process(
            [*self._command, "--uri", self.uri],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        assert process.stdin and process.stdout and process.stderr
        closing = False
        try:
            stdout = BufferedByteReceiveStream(process.stdout)
            with anyio.fail_after(self._start_timeout):
                hello = json.loads(await stdout.receive_until(b"\n", MAX_LINE))
            if hello.get("event") != HELPER_READY:
                raise RuntimeError(f"admin helper did not start: {hello}")
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._log_stderr, process)
                self._process = process
                self._changed()
                log.info("virtmon.admin.helper.started", pid=process.pid, restarts=self.restarts)
                self._publish(AdminEvent("helper_started",
                                         {"pid": process.pid, "restarts": self.restarts}))
                self._report_started()
                await self._read_replies(stdout)
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            closing = True
            raise
        finally:
            was_ready = self._process is process
            self._process = None
            self._fail_pending("the admin helper died")
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                with contextlib.suppress(Exception):
                    await process.stdin.aclose()
                with anyio.move_on_after(1):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            self._last_failure = f"the admin helper exited with code {process.returncode}"
            if closing:
                log.info("virtmon.admin.helper.stopped", pid=process.pid)
            elif was_ready:
                log.warning("virtmon.admin.helper.died", pid=process.pid,
                            returncode=process.returncode)
                self._publish(AdminEvent("helper_died", {"returncode": process.returncode}))

    async def _log_stderr(self, process: Process) -> None:
        assert process.stderr is not None
        stream = BufferedByteReceiveStream(process.stderr)
        with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                                 anyio.ClosedResourceError):
            while True:
                line = await stream.receive_until(b"\n", MAX_LINE)
                log.warning("virtmon.admin.helper.stderr", line=line.decode(errors="replace"))

    async def _read_replies(self, stdout: BufferedByteReceiveStream) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                                 anyio.ClosedResourceError):
            while True:
                line = await stdout.receive_until(b"\n", MAX_LINE)
                try:
                    message = json.loads(line)
                except ValueError:
                    log.error("virtmon.admin.helper.garbage", line=line[:200].decode("replace"))
                    continue
                if not isinstance(message, dict):
                    continue
                if "event" in message:
                    kind = str(message.pop("event"))
                    log.info(f"virtmon.admin.{kind}", **message)
                    self._publish(AdminEvent(kind, message))
                    continue
                request_id = message.get("id")
                pending = self._pending.get(request_id) if isinstance(request_id, int) else None
                if pending is not None:
                    pending.reply = message
                    pending.done.set()

    def _fail_pending(self, reason: str) -> None:
        for pending in self._pending.values():
            pending.failure = AdminHelperUnavailable(reason)
            pending.done.set()
        self._pending.clear()

    # -- events ----------------------------------------------------------------------------

    def subscribe(self, max_buffer: int = 64) -> MemoryObjectReceiveStream[AdminEvent]:
        """A bounded stream of future events; when it is full, events are dropped and counted.

        The caller closes it (``with helper.subscribe() as events:``); it ends when the helper
        supervisor stops.
        """
        send, receive = anyio.create_memory_object_stream[AdminEvent](max_buffer)
        self._subscribers.append(send)
        return receive

    def _publish(self, event: AdminEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("virtmon.admin.event_callback_failed", kind=event.kind)
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                self.events_dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.remove(send)

    # -- requests --------------------------------------------------------------------------

    async def request(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - its expiry also decides whether to kill the helper
    ) -> Any:
        """Run one helper op and return its result; raise `AdminError` on any failure."""
        if self._stopped or (self._process is None and not self._starting):
            raise AdminHelperUnavailable(self._last_failure)
        request_id = next(self._ids)
        pending = _Pending()
        line = encode({"id": request_id, "op": op, "args": dict(args or {})})
        sent_to: Process | None = None
        try:
            with anyio.fail_after(timeout):
                async with self._slots:
                    while self._process is None:
                        if self._stopped or not self._starting:
                            raise AdminHelperUnavailable(self._last_failure)
                        await self._state_changed.wait()
                    process = self._process
                    assert process.stdin is not None
                    self._pending[request_id] = pending
                    async with self._write_lock:
                        await process.stdin.send(line)
                    sent_to = process
                    await pending.done.wait()
        except TimeoutError:
            self._give_up(request_id, sent_to, op, timeout)
            raise AdminTimeout(f"admin op {op!r} got no reply within {timeout} s") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise AdminHelperUnavailable("the admin helper closed its input") from None
        finally:
            self._pending.pop(request_id, None)
        if pending.failure is not None:
            raise pending.failure
        reply = pending.reply or {}
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        raise AdminError(int(error.get("code", HELPER_UNAVAILABLE)),
                         str(error.get("message", "no error message")),
                         int(error.get("domain", 0)))

    def _give_up(self, request_id: int, process: Process | None, op: str, timeout: float) -> None:
        """Kill the helper if it is stuck on this request (it is the oldest one it was sent)."""
        if process is None or process is not self._process:
            return
        if request_id == min(self._pending, default=request_id):
            log.error("virtmon.admin.helper.stuck", op=op, timeout=timeout, pid=process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
