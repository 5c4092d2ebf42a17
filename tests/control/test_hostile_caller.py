"""Availability under a hostile read-role caller (issue 19): with hundreds of event streams held
open and never read, slow and oversized request bodies and idle connections, all from one uid,
the control API still answers other callers, and a write caller within its deadline.

On libvirt's test driver; the callers are processes with uids of their own (peers.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import daemon_config, running_daemon
from tests.control.peers import ROOT, probe, unused_ids
from tests.streamclient import follow

STREAMS, BODIES, IDLE = 300, 40, 100
DEADLINE = 10.0  # control.request_timeout: what a write caller is promised


async def test_a_hostile_read_caller_cannot_starve_writes_or_other_callers(
        short_tmp: Path) -> None:
    """One read uid opens 300 streams it never reads, 40 requests with trickling bodies, an
    oversized body and 100 idle connections: it gets its share (32 streams, 16 requests) and
    429 beyond; another reader and the write caller are served at once, the writer well within
    its deadline. Before, the streams alone took all 64 request slots: everyone got 503."""
    os.chmod(short_tmp, 0o755)
    hostile, reader, writer = unused_ids(3)
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        collect={"collectors": {"admin": False}},
                        control={"socket_mode": "0666", "read_uids": [hostile, reader],
                                 "write_uids": [writer], "allow_write": True,
                                 "request_timeout": DEADLINE})
    async with running_daemon(cfg) as daemon:
        sock = daemon.control_socket
        attacker = await asyncio.create_subprocess_exec(
            "setpriv", f"--reuid={hostile}", f"--regid={hostile}", "--clear-groups",
            sys.executable, "-m", "tests.control.hostile_probe", str(sock),
            str(STREAMS), str(BODIES), str(IDLE),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")})
        assert attacker.stdin is not None and attacker.stdout is not None
        try:
            report = json.loads(await asyncio.wait_for(attacker.stdout.readline(), 60))
            # Its share, and refusals beyond it; nothing it does is a 503 for the others.
            assert report["streams"] == {"200": 32, "429": STREAMS - 32}, report
            assert report["bodies"] == {"pending": 16, "429": BODIES - 16}, report
            assert report["oversized"] == "413", report

            started = time.monotonic()
            answers = await asyncio.to_thread(probe, sock, writer, [
                {"operation": "domain.suspend", "arguments": {"domain": "test"}},
                {"operation": "domain.resume", "arguments": {"domain": "test"}},
            ])
            elapsed = time.monotonic() - started
            assert [a["status"] for a in answers] == [200, 200], answers
            assert elapsed < DEADLINE, elapsed

            answers = await asyncio.to_thread(probe, sock, reader, [
                {"get": "/v1/status"}, {"operation": "host.info", "arguments": {}}])
            assert [a["status"] for a in answers] == [200, 200], answers
            status = answers[0]["document"]["result"]
            assert status["control"]["streams"] == 32
            async with follow(sock):  # another caller still gets a stream of its own
                assert daemon.stream_slots.open == 33
        finally:
            attacker.stdin.close()  # it lets go of everything
            assert await asyncio.wait_for(attacker.wait(), 30) == 0
