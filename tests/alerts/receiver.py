"""A webhook receiver for tests: an aiohttp server on loopback that records every request.

``respond`` decides each answer (status, headers, delay); the default is 200. ``wait_for``
polls with a deadline, so no test loops without bound.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.daemon import free_port


@dataclass
class Request:
    """One request the receiver got."""

    time: float
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], float]  # status, headers, delay in seconds


@dataclass
class Recorder:
    """Records requests; ``respond(request) -> (status, headers, delay)``."""

    respond: Callable[[Request], Answer] = lambda _r: (200, {}, 0.0)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        """Record, then answer as ``respond`` says."""
        got = Request(time.monotonic(), request.path, dict(request.headers),
                      await request.read())
        self.requests.append(got)
        status, headers, delay = self.respond(got)
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, headers=headers, text="ok")

    def accepted(self) -> list[Request]:
        """Requests answered 2xx (by the current policy's view: all recorded with 2xx)."""
        return [r for r in self.requests if self.respond(r)[0] < 300]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll until ``predicate()`` holds; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met in {timeout} s; {len(self.requests)} "
                                   "requests recorded")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def serving(recorder: Recorder, port: int = 0,
                  ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Recorder]:
    """Serve ``recorder`` on 127.0.0.1 for the body of the ``with`` (HTTPS with a context)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port or free_port(), ssl_context=ssl_context)
    await site.start()
    host, bound = runner.addresses[0][:2]
    recorder.url = f"{'https' if ssl_context else 'http'}://{host}:{bound}/hook"
    try:
        yield recorder
    finally:
        await runner.cleanup()


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a condition with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout} s")
        await asyncio.sleep(0.02)
