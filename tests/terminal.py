"""A command in a real terminal: a pseudo terminal as the controlling terminal of its own
session, so that Ctrl-C is the terminal driver's and programs see a TTY."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Terminal:
    """A command in a pseudo terminal of its own (its session's controlling terminal)."""

    def __init__(self, argv: list[str], env: dict[str, str], columns: int = 80) -> None:
        self.fd, terminal = os.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        # setsid --ctty: a new session whose controlling terminal is this one (stdin).
        self.process = subprocess.Popen(
            ["setsid", "--ctty", *argv], stdin=terminal, stdout=terminal, stderr=terminal,
            cwd=ROOT, env={**env, "TERM": "xterm"})
        os.close(terminal)
        self.shown = b""

    def type(self, keys: bytes) -> None:
        """Keys typed on the terminal."""
        os.write(self.fd, keys)

    def read_until(self, done: Callable[[bytes], bool], timeout: float = 30.0) -> bytes:
        """What the terminal has shown, once ``done`` says it is enough or the terminal closed
        (bounded)."""
        deadline = time.monotonic() + timeout
        while not done(self.shown):
            left = deadline - time.monotonic()
            assert left > 0, f"the terminal showed only {self.shown!r}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the command has gone and closed the terminal
                    chunk = b""
                if not chunk:
                    break
                self.shown += chunk
        return self.shown

    def close(self) -> int:
        """Wait for the command's end (killing it after 30 s); its exit code."""
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        os.close(self.fd)
        return code
