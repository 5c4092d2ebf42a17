"""A virtmon daemon run in-process: its configuration and its life, for the tests and bench/.

Plain functions (no pytest), so the benchmarks use the same ones as the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from virtmon import config as config_module
from virtmon import configfile
from virtmon.app import Daemon


def free_port() -> int:
    """A loopback TCP port nobody listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_config(state: Path, **sections: dict[str, Any]) -> config_module.Config:
    """A daemon's configuration with its files in ``state`` and a free loopback metrics port
    (port 0 is not allowed); ``sections`` add to or override the defaults, key by key."""
    port = free_port()
    raw: dict[str, dict[str, Any]] = {
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "control": {"socket": str(state / "control.sock"), "socket_group": ""},
        "state": {"dir": str(state / "state")},
        "collect": {"interval": 1.0},
        "log": {"level": "debug", "format": "json"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return configfile.build(raw)


@contextlib.asynccontextmanager
async def running_daemon(cfg: config_module.Config, demo: bool = False,
                         start_timeout: float = 60.0,
                         stop_timeout: float = 30.0,
                         prepare: Callable[[Daemon], None] = lambda _daemon: None,
                         ) -> AsyncIterator[Daemon]:
    """Run a Daemon on this loop for the body of an ``async with``; stop it and wait after.
    ``prepare`` may change the daemon before it runs (settings no configuration key sets)."""
    daemon = Daemon(cfg, demo=demo)
    prepare(daemon)
    task = asyncio.ensure_future(daemon.run())
    started = asyncio.ensure_future(daemon.started.wait())
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED,
                                 timeout=start_timeout)
    if task in done:
        started.cancel()
        task.result()  # raises the daemon's error
    if started not in done:
        task.cancel()
        raise TimeoutError(f"the daemon did not start within {start_timeout:g} s")
    try:
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, stop_timeout)
