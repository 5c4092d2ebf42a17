"""Fixtures of the control API's lab tests: a daemon on the lab and a client of its socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import daemon_config, running_daemon
from virtmon.app import Daemon
from virtmon.ctl.client import ControlClient, Problem


@dataclass(frozen=True)
class Env:
    """A daemon on the lab and a client of its socket."""

    daemon: Daemon
    sock: Path
    client: ControlClient

    async def call(self, operation: str, **args: Any) -> Any:
        """One operation's result (in a worker thread)."""
        return await asyncio.to_thread(self.client.call, operation, **args)

    async def problem(self, operation: str, **args: Any) -> Problem:
        """The problem an operation answers with (fails if it succeeds)."""
        try:
            result = await self.call(operation, **args)
        except Problem as exc:
            return exc
        raise AssertionError(f"{operation} succeeded: {result!r}")

    async def get(self, path: str, query: list[tuple[str, str]] | None = None) -> Any:
        """GET a JSON document (in a worker thread)."""
        return await asyncio.to_thread(self.client.get, path, query or [])


async def daemon_env(short_tmp: Path, lab: str, **control: Any) -> AsyncIterator[Env]:
    """A daemon on the lab with these ``[control]`` settings, and a client of its socket."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab},
                        control={"request_timeout": 20.0, **control})
    async with running_daemon(cfg) as daemon:
        sock = short_tmp / "control.sock"
        yield Env(daemon, sock, ControlClient(str(sock), timeout=30))


@pytest.fixture
async def ro(short_tmp: Path, lab: str) -> AsyncIterator[Env]:
    """A daemon with control.allow_write off (the default)."""
    async for env in daemon_env(short_tmp, lab, allow_write=False):
        yield env


@pytest.fixture
async def rw(short_tmp: Path, lab: str) -> AsyncIterator[Env]:
    """A daemon with control.allow_write on."""
    async for env in daemon_env(short_tmp, lab, allow_write=True):
        yield env
