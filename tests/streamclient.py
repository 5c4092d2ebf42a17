"""A test client of the control socket's event stream: follows it and waits for matching events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

Event = dict[str, Any]


class StreamFollower:
    """Reads ``GET /v1/events?follow=1`` as NDJSON into a list, in the background."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.notices: list[Event] = []
        self._changed = asyncio.Condition()

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        async for line in response.content:
            item = json.loads(line)
            async with self._changed:
                (self.events if "seq" in item else self.notices).append(item)
                self._changed.notify_all()

    async def wait_for(self, match: Callable[[Event], bool], timeout: float = 30.0) -> Event:
        """The first event (seen so far or arriving) that matches."""

        async def find() -> Event:
            async with self._changed:
                while True:
                    for event in self.events:
                        if match(event):
                            return event
                    await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)


def lifecycle(domain: str, name: str, detail: str | None = None) -> Callable[[Event], bool]:
    """A matcher for a lifecycle event of a domain."""
    return lambda e: (e["kind"] == "lifecycle" and e["domain"] == domain and e["name"] == name
                      and (detail is None or e["detail"] == detail))


@contextlib.asynccontextmanager
async def follow(socket: Path, query: str = "") -> AsyncIterator[StreamFollower]:
    """Follow the stream for the body of an ``async with``."""
    follower = StreamFollower()
    connector = aiohttp.UnixConnector(path=str(socket))
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"http://virtmon/v1/events?follow=1{'&' + query if query else ''}"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as response:
            assert response.status == 200, await response.text()
            reader = asyncio.ensure_future(follower._read(response))
            try:
                yield follower
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                    await reader


async def get_json(socket: Path, path: str) -> Any:
    """GET a JSON document from the control socket."""
    connector = aiohttp.UnixConnector(path=str(socket))
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get(f"http://virtmon{path}") as response:
        if response.content_type == "application/x-ndjson":
            return [json.loads(line) for line in (await response.text()).splitlines()]
        return await response.json(content_type=None)


async def get_text(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET a text document over TCP."""
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.text()
