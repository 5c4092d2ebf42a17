"""A daemon on the test driver with one alert rule and json receivers, and its socket client.

The tests publish events into the daemon's bus themselves (``crash``/``start``), so no libvirt
activity is needed; the control client is blocking and runs in a thread, since the daemon
serves on the test's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.alerts.receiver import Recorder
from tests.conftest import daemon_config, running_daemon
from virtmon.app import Daemon
from virtmon.ctl.client import ControlClient, Problem
from virtmon.events.model import Event

URI = "test:///default"
CRASH_RULE = {"name": "Crash", "severity": "critical", "summary": "{domain} crashed",
              "match": {"kind": "lifecycle", "name": "stopped", "detail": "crashed"},
              "resolve": {"kind": "lifecycle", "name": "started"}}


def receiver(name: str, url: str, **extra: Any) -> dict[str, Any]:
    """A json receiver that retries fast (tests wait for it)."""
    return {"name": name, "kind": "json", "urls": [url], "batch_size": 1,
            "backoff_initial": 0.2, "backoff_max": 0.5, **extra}


@dataclass
class Env:
    """The running daemon and a client of its control socket."""

    daemon: Daemon
    client: ControlClient
    socket: str

    async def call(self, operation: str, **arguments: Any) -> Any:
        """One operation through the socket (in a thread: the daemon is on this loop)."""
        return await asyncio.to_thread(self.client.call, operation, **arguments)

    async def problem(self, operation: str, **arguments: Any) -> Problem:
        """The problem an operation answers with (the test fails if it succeeds)."""
        try:
            await self.call(operation, **arguments)
        except Problem as exc:
            return exc
        raise AssertionError(f"{operation} {arguments} succeeded")

    def publish(self, name: str, detail: str | None, domain: str) -> None:
        """A lifecycle event into the daemon's bus, as libvirt's callback would."""
        assert self.daemon.bus.publish(Event(time=time.time(), uri=URI, kind="lifecycle",
                                             name=name, detail=detail, domain=domain))

    def crash(self, domain: str) -> None:
        """The domain crashed (fires Crash)."""
        self.publish("stopped", "crashed", domain)

    def start(self, domain: str) -> None:
        """The domain started (resolves Crash)."""
        self.publish("started", "booted", domain)

    async def alert(self, domain: str, state: str = "all", timeout: float = 20.0
                    ) -> dict[str, Any]:
        """The newest alert of a domain in a state, once the engine has stored it."""
        deadline = time.monotonic() + timeout
        while True:
            found = (await self.call("alerts.list", state=state, domain=domain))["alerts"]
            if found:
                return dict(found[0])
            assert time.monotonic() < deadline, f"no {state} alert of {domain} in {timeout} s"
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def alert_daemon(tmp: Path, receivers: list[dict[str, Any]], *,
                       allow_write: bool = True, **control: Any) -> AsyncIterator[Env]:
    """A daemon with the Crash rule only, these receivers, and control.allow_write."""
    cfg = daemon_config(tmp, libvirt={"uri": URI},
                        control={"allow_write": allow_write, **control},
                        collect={"collectors": {"admin": False}},
                        alerts={"default_rules": False, "rules": [CRASH_RULE],
                                "receivers": receivers})
    async with running_daemon(cfg) as daemon:
        sock = str(tmp / "control.sock")
        yield Env(daemon, ControlClient(sock), sock)


def domains_at(rec: Recorder, status: str = "firing") -> list[str]:
    """Domains of the alerts a json receiver accepted, in order."""
    return [a["labels"].get("domain") for r in rec.requests for a in r.json()["alerts"]
            if a["status"] == status]
