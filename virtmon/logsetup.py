"""structlog set-up: JSON lines for journald when not on a TTY, console output on a TTY.

Event names are stable and dotted (``virtmon.connection.lost``) with flat keys, so operators can
grep and alert on them. The standard library's logging (aiohttp, libvirtaio) goes the same way.
So do the C libraries' own lines (:func:`route_native_stderr`): libxml2 prints warnings such as
``I/O warning : failed to load external entity "..."`` straight to file descriptor 2 (libvirt
catches libxml2's errors, not its warnings), which put raw lines between the JSON ones.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from virtmon.component import Restart

if TYPE_CHECKING:
    from virtmon.config import LogConfig

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
_METHODS = {"debug": logging.DEBUG, "info": logging.INFO, "msg": logging.INFO,
            "warning": logging.WARNING, "warn": logging.WARNING, "error": logging.ERROR,
            "exception": logging.ERROR, "critical": logging.CRITICAL, "fatal": logging.CRITICAL}


class _LevelFilter:
    """Drops events below the current level.

    A processor rather than structlog's filtering wrapper: module loggers are bound once at
    import and keep their wrapper class, so only a processor that reads this object sees a level
    changed by a reload (SIGHUP).
    """

    def __init__(self) -> None:
        self.level = logging.INFO

    def __call__(self, logger: Any, method: str, event: Any) -> Any:
        if _METHODS.get(method, logging.INFO) < self.level:
            raise structlog.DropEvent
        return event


_FILTER = _LevelFilter()


def set_level(level: str) -> None:
    """Change the level of every logger at run time (a reload)."""
    _FILTER.level = LEVELS[level]
    logging.getLogger().setLevel(max(LEVELS[level], logging.INFO))


class RunningLog:
    """The log of a running daemon as a component: a reload changes its level; the format is
    chosen once, at start (a reload leaves ``log.format`` for a restart)."""

    async def reconfigure(self, log: LogConfig) -> Restart:
        """Take a reloaded ``log.level``."""
        set_level(log.level)
        return ()


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Configure structlog and stdlib logging; ``fmt`` is json, console or auto (TTY → console)."""
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    _FILTER.level = LEVELS[level]
    shared: list[Any] = [
        _FILTER,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(LEVELS[level], logging.INFO))


def route_native_stderr() -> TextIO:
    """Make what C code writes to file descriptor 2 log records; the stream to log to.

    Descriptor 2 becomes a pipe read by a thread: each line is logged as a warning
    ``virtmon.native.stderr`` (``line``: the text), and a line that already is a JSON object is
    passed through as it is. Python's ``sys.stderr``, the returned stream (for
    :func:`configure`) and fatal-error tracebacks (faulthandler) keep the original descriptor.
    Call it once, before :func:`configure`.
    """
    original = os.dup(2)
    out = os.fdopen(original, "w", buffering=1, encoding="utf-8", errors="replace")
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stderr = out
    faulthandler.enable(file=out)
    threading.Thread(target=_pump, args=(read_fd, out), name="virtmon-native-stderr",
                     daemon=True).start()
    return out


def _pump(read_fd: int, out: TextIO) -> None:
    log = structlog.get_logger("virtmon.native")
    with os.fdopen(read_fd, "rb") as pipe:
        for raw in pipe:
            text = raw.decode(errors="replace").rstrip("\r\n")
            if not text.strip():
                continue
            if text.startswith("{"):
                with contextlib.suppress(ValueError):
                    if isinstance(json.loads(text), dict):
                        out.write(text + "\n")
                        continue
            log.warning("virtmon.native.stderr", line=text)
