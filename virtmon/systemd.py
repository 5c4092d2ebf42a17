"""sd_notify without a dependency: READY, STATUS, STOPPING and the watchdog.

The notify socket is taken from ``NOTIFY_SOCKET`` once and removed from the environment, so
child processes (the admin helper) do not inherit it. Abstract sockets (``@name``) are supported.
Without ``NOTIFY_SOCKET`` every call does nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket


class Notifier:
    """Sends sd_notify messages to systemd (or to a test's own socket)."""

    def __init__(self, address: str | None = None) -> None:
        if address is None:
            address = os.environ.pop("NOTIFY_SOCKET", None)
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        watchdog_usec = os.environ.pop("WATCHDOG_USEC", None)
        os.environ.pop("WATCHDOG_PID", None)
        self.watchdog_interval = int(watchdog_usec) / 2e6 if watchdog_usec else None

    def notify(self, **fields: str | int) -> None:
        """Send ``KEY=value`` lines, e.g. ``notify(READY=1, STATUS="connected")``."""
        if self.address is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        # If systemd went away there is nothing useful to do about it here.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, \
                contextlib.suppress(OSError):
            sock.sendto(message, self.address)
