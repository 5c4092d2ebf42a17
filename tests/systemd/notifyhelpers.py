"""A notify socket of the test's own, and a virtmon daemon run as a subprocess under it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Message = dict[str, str]


class NotifySocket:
    """An AF_UNIX datagram socket that receives sd_notify messages (a path or ``@abstract``)."""

    def __init__(self, directory: Path, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"virtmon-test-{uuid.uuid4().hex[:12]}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = directory / "notify.sock"
            self.sock.bind(str(path))
            self.address = str(path)
        self.received: list[Message] = []

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def drain(self) -> None:
        """Receive whatever is already queued (after the sender exited), into ``received``."""
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except BlockingIOError:
                    return
                self.received.append(
                    dict(line.split("=", 1) for line in data.decode().splitlines() if line))
        finally:
            self.sock.setblocking(True)

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float = 20.0) -> Message:
        """Receive until a message matches; every message is kept in ``received``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching notify message in {timeout} s: {self.received}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.received.append(message)
            if predicate(message):
                return message


def write_config(path: Path, state: Path, port: int, extra: str = "",
                 interval: float = 0.5) -> None:
    """A daemon configuration on libvirt's test driver with a fast cycle."""
    path.write_text(
        f"""
[libvirt]
uri = "test:///default"

[collect]
interval = {interval}
{extra}

[collect.collectors]
admin = false

[metrics]
listen = "127.0.0.1:{port}"

[control]
socket = "{state / 'control.sock'}"
socket_group = ""

[state]
dir = "{state / 'state'}"

[log]
level = "info"
format = "json"
""",
        encoding="utf-8",
    )


@dataclass
class DaemonProcess:
    """A ``virtmon run`` subprocess and its log (JSON lines on stderr, kept in a file)."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    notify: NotifySocket
    control_socket: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> list[dict[str, Any]]:
        """The JSON log records written so far."""
        records = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def signal(self, signum: int) -> None:
        """Send a signal to the daemon by pid."""
        os.kill(self.proc.pid, signum)


@contextlib.contextmanager
def daemon_process(
    directory: Path, config: Path, notify: NotifySocket, watchdog_usec: int | None = 1_000_000,
    extra_env: dict[str, str] | None = None, argv_prefix: list[str] | None = None,
) -> Iterator[DaemonProcess]:
    """Run ``virtmon run --config FILE`` with NOTIFY_SOCKET (and WATCHDOG_USEC); kill on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env["NOTIFY_SOCKET"] = notify.address
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    env.update(extra_env or {})
    log_path = directory / "daemon.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [*(argv_prefix or []), sys.executable, "-m", "virtmon.cli", "run",
             "--config", str(config)],
            env=env, stdout=subprocess.DEVNULL, stderr=log_file,
        )
    try:
        yield DaemonProcess(proc, log_path, notify, directory / "control.sock", env)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
