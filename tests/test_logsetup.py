"""Logging set-up: JSON lines off a TTY, console lines on one, and a level a reload can change."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from virtmon import logsetup


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """Put structlog's and the root logger's configuration back after each test."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
    logsetup.set_level("info")


def log_one(stream: Any) -> None:
    """Configure with format "auto" on ``stream`` and log one event with a key."""
    logsetup.configure("info", "auto", stream)
    structlog.get_logger("virtmon.test").info("virtmon.test.event", domain="web-1")


def test_auto_writes_json_lines_when_not_on_a_tty() -> None:
    """A pipe or file (journald): one JSON object per line with event, level, time and keys."""
    stream = io.StringIO()
    log_one(stream)
    record = json.loads(stream.getvalue())
    assert record["event"] == "virtmon.test.event" and record["domain"] == "web-1"
    assert record["level"] == "info" and record["timestamp"].endswith("Z")


def test_auto_writes_console_lines_on_a_tty() -> None:
    """A terminal: a readable console line, not JSON."""
    controller, terminal = pty.openpty()
    try:
        with os.fdopen(terminal, "w", closefd=False) as stream:
            log_one(stream)
            stream.flush()
        line = os.read(controller, 4096).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert "virtmon.test.event" in line and "domain=web-1" in line
    assert not line.lstrip().startswith("{")


def test_a_level_set_at_run_time_reaches_loggers_bound_before() -> None:
    """set_level (a reload) applies to a logger bound at import: debug appears, then goes."""
    stream = io.StringIO()
    logsetup.configure("info", "json", stream)
    bound = structlog.get_logger("virtmon.test").bind(component="test")
    bound.debug("virtmon.test.hidden")
    logsetup.set_level("debug")
    bound.debug("virtmon.test.shown")
    logsetup.set_level("warning")
    bound.info("virtmon.test.hidden_again")
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["virtmon.test.shown"]
