"""SIGKILL of a virtmon process with undelivered alerts in its outbox: delivered after restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.alerts.receiver import Recorder, serving
from tests.daemon import free_port
from virtmon.alerts import formats

CONFIG = """
[libvirt]
uri = "test:///default"
[metrics]
listen = "127.0.0.1:{metrics}"
[control]
socket = "{tmp}/c.sock"
socket_group = ""
[state]
dir = "{tmp}/state"
[collect]
interval = 1.0
[collect.collectors]
admin = false
[log]
format = "json"
[alerts]
default_rules = false
[[alerts.rules]]
name = "DemoChange"
summary = "{{domain}} {{name}}"
labels = {{ seq = "{{seq}}" }}
match = {{ kind = "lifecycle", domain = "demo-*" }}
resolve_after = 3600
[[alerts.receivers]]
name = "hook"
kind = "json"
urls = ["http://127.0.0.1:{port}/hook"]
batch_size = 1
backoff_initial = 0.5
backoff_max = 1.0
"""


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """virtmon run with demo activity on the test driver, as a child process."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "virtmon.cli", "run", "--config",
                                 str(config), "--demo"], stdout=out, stderr=subprocess.STDOUT)


def pending_keys(db: Path) -> set[str]:
    """Idempotency keys of the outbox rows not yet delivered (read-only look)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute("SELECT body FROM outbox WHERE state = 'pending'").fetchall()
    except sqlite3.OperationalError:
        return set()
    return {json.loads(row[0])["key"] for row in rows}


async def test_sigkill_with_pending_deliveries_loses_nothing(short_tmp: Path) -> None:
    """kill -9 with alerts queued for a dead receiver; after the restart each key arrives."""
    port = free_port()
    config = short_tmp / "virtmon.toml"
    config.write_text(CONFIG.format(metrics=free_port(), tmp=short_tmp, port=port))
    db = short_tmp / "state" / "virtmon.db"
    log = short_tmp / "virtmon.log"
    first = start(config, log)
    try:
        deadline = time.monotonic() + 60
        while len(queued := pending_keys(db)) < 4:
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no alerts queued within 60 s"
            await asyncio.sleep(0.2)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    queued = pending_keys(db)  # everything accepted before the kill
    async with serving(Recorder(), port) as rec:
        second = start(config, log)
        try:
            deadline = time.monotonic() + 60
            while not queued <= {r.headers[formats.IDEMPOTENCY_HEADER] for r in rec.requests}:
                assert second.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "queued alerts not delivered within 60 s"
                await asyncio.sleep(0.1)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    keys = [r.headers[formats.IDEMPOTENCY_HEADER] for r in rec.requests]
    assert len(keys) == len(set(keys)), "a key was delivered twice to a receiver that said 200"
    assert second.returncode == 0
