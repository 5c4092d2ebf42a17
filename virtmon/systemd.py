"""sd_notify and socket activation without a dependency.

The notify socket is taken from ``NOTIFY_SOCKET`` once and removed from the environment, so
child processes (the admin helper) do not inherit it; so are ``WATCHDOG_USEC``/``WATCHDOG_PID``
and the socket-activation variables ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES``. Abstract
sockets (``@name``) are supported. Without ``NOTIFY_SOCKET`` every notification does nothing.
References: sd_notify(3), sd_listen_fds(3).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import MutableMapping
from dataclasses import dataclass

SD_LISTEN_FDS_START = 3
ROLES = ("control", "metrics")


class Notifier:
    """Sends sd_notify messages to systemd (or to a test's own socket)."""

    def __init__(
        self, address: str | None = None, environ: MutableMapping[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        if address is None:
            address = env.pop("NOTIFY_SOCKET", None)
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        watchdog_usec = env.pop("WATCHDOG_USEC", None)
        watchdog_pid = env.pop("WATCHDOG_PID", None)
        # WATCHDOG_PID names the process the watchdog is meant for (sd_watchdog_enabled(3)).
        mine = watchdog_pid is None or watchdog_pid == str(os.getpid())
        self.watchdog_interval = (
            int(watchdog_usec) / 2e6 if watchdog_usec and watchdog_usec.isdigit() and mine
            else None
        )

    def notify(self, **fields: str | int) -> None:
        """Send ``KEY=value`` lines, e.g. ``notify(READY=1, STATUS="connected")``."""
        if self.address is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        # If systemd went away there is nothing useful to do about it here.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, \
                contextlib.suppress(OSError):
            sock.sendto(message, self.address)

    def reloading(self, status: str) -> None:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (what Type=notify-reload services send)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(RELOADING=1, MONOTONIC_USEC=usec, STATUS=status)


@dataclass(frozen=True, slots=True)
class ActivatedSocket:
    """A listening socket passed by systemd (``LISTEN_FDS``), with its ``FileDescriptorName=``."""

    name: str
    sock: socket.socket

    @property
    def family(self) -> int:
        """AF_UNIX, AF_INET or AF_INET6."""
        return int(self.sock.family)


def listen_fds(environ: MutableMapping[str, str] | None = None) -> list[ActivatedSocket]:
    """The sockets systemd passed to this process (sd_listen_fds(3)); the variables are removed.

    Only honoured when ``LISTEN_PID`` is this process: a child that inherited the variables by
    mistake must not take descriptors it does not own.
    """
    env = os.environ if environ is None else environ
    pid = env.pop("LISTEN_PID", None)
    count = env.pop("LISTEN_FDS", None)
    names = env.pop("LISTEN_FDNAMES", None)
    if pid != str(os.getpid()) or not count or not count.isdigit():
        return []
    labels = names.split(":") if names else []
    sockets = []
    for index in range(int(count)):
        fd = SD_LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        name = labels[index] if index < len(labels) else "unknown"
        sockets.append(ActivatedSocket(name, sock))
    return sockets


def pick_socket(
    sockets: list[ActivatedSocket], name: str, families: tuple[int, ...]
) -> socket.socket | None:
    """The socket named ``name``, else the first of one of ``families`` named for no other role.

    Roles are the ``FileDescriptorName=`` values virtmon knows: ``control`` and ``metrics``.
    """
    for candidate in sockets:
        if candidate.name == name:
            return candidate.sock
    for candidate in sockets:
        if candidate.family in families and candidate.name not in ROLES:
            return candidate.sock
    return None
