"""`virtmon run` as a process: SIGTERM stops it cleanly; a second SIGINT forces the exit."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.lab import lab as lab_module


def start(short_tmp: Path, port: int, uri: str = "test:///default") -> subprocess.Popen[str]:
    """A daemon (on the test driver by default); returns once its control socket exists."""
    process = subprocess.Popen(
        [sys.executable, "-m", "virtmon.cli", "run", "--uri", uri,
         "--listen", f"127.0.0.1:{port}", "--control-socket", str(short_tmp / "c.sock"),
         "--state-dir", str(short_tmp / "state"), "--no-collector.admin", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while not (short_tmp / "c.sock").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"daemon did not start: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    return process


def test_sigterm_shuts_down_gracefully(short_tmp: Path) -> None:
    """SIGTERM: exit 0 within the deadline, the socket removed, the journal closed cleanly."""
    process = start(short_tmp, 9781)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err[-2000:]
    assert not (short_tmp / "c.sock").exists()
    assert '"event": "virtmon.stopped"' in err
    assert not (short_tmp / "state" / "virtmon.db-wal").exists() or \
        (short_tmp / "state" / "virtmon.db-wal").stat().st_size == 0


@pytest.mark.lab
def test_a_second_sigint_forces_the_exit_while_shutdown_hangs(lab: str, short_tmp: Path) -> None:
    """libvirtd stopped, so the graceful shutdown waits on it: a second SIGINT exits 130 now."""
    process = start(short_tmp, 9782, uri="test+unix:///default")
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    reader = threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr],  # type: ignore[union-attr]
        daemon=True)
    reader.start()
    libvirtd = lab_module.libvirtd_pid()
    assert libvirtd is not None
    os.kill(libvirtd, signal.SIGSTOP)
    try:
        os.kill(process.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        while "virtmon.stopping" not in lines.get(timeout=max(0.1, deadline - time.monotonic())):
            pass
        time.sleep(0.5)  # the graceful shutdown is now waiting for the stopped libvirtd
        assert process.poll() is None
        started = time.monotonic()
        os.kill(process.pid, signal.SIGINT)
        process.wait(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        os.kill(libvirtd, signal.SIGCONT)
    reader.join(timeout=10)  # the pipe ends with the process
    for pipe in (process.stdout, process.stderr):
        assert pipe is not None
        pipe.close()
    assert process.returncode == 130
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert any("virtmon.forced_exit" in line for line in rest)
