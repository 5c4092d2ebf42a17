"""virtmonctl's WebSocket client (stdlib only) against aiohttp's WebSocket server on a Unix socket:
every length encoding both ways, pings, the close code and reason, and a refusal's problem."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web

from virtmon.control.api import is_stream
from virtmon.ctl.client import Problem
from virtmon.ctl.websocket import Closed, WebSocket


async def _echo(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.ping(b"are you there")
    async for message in ws:
        if message.type != WSMsgType.BINARY:
            break
        if message.data == b"bye":
            await ws.close(code=4000, message=b"domain d stopped")
            break
        await ws.send_bytes(message.data)
    return ws


async def _refuse(_request: web.Request) -> web.Response:
    body = {"type": "about:blank", "title": "Conflict", "status": 409,
            "detail": "the console of d is open by another client; force=true takes it over"}
    return web.Response(status=409, text=json.dumps(body),
                        content_type="application/problem+json")


@pytest.fixture
async def sock(short_tmp: Path) -> AsyncIterator[Path]:
    """An aiohttp server with an echoing WebSocket and a refusing route."""
    app = web.Application()
    app.router.add_get("/echo", _echo)
    app.router.add_get("/refuse", _refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    path = short_tmp / "ws.sock"
    await web.UnixSite(runner, str(path)).start()
    try:
        yield path
    finally:
        await runner.cleanup()


def _round_trip(path: Path, sizes: list[int]) -> list[bytes]:
    ws = WebSocket.connect(str(path), "/echo", 10)
    try:
        out = []
        for size in sizes:
            ws.send(bytes(i % 256 for i in range(size)) or b"\0")
            out.append(ws.receive())
        ws.send(b"bye")
        out.append(ws.receive())  # type: ignore[arg-type]
        return out
    finally:
        ws.sock.close()


async def test_messages_of_every_length_encoding_come_back_whole(sock: Path) -> None:
    """7-bit, 16-bit and 64-bit lengths round-trip through aiohttp (which checks our masking),
    the server's ping is answered, and its close code and reason reach the client."""
    sizes = [1, 125, 126, 65535, 65536, 300000]
    answers = await asyncio.to_thread(_round_trip, sock, sizes)
    for size, answer in zip(sizes, answers, strict=False):
        assert answer == bytes(i % 256 for i in range(size))
    assert answers[-1] == Closed(4000, "domain d stopped")


async def test_a_refusal_is_the_daemons_problem(sock: Path) -> None:
    """An error answer to the opening request becomes the problem document it carries."""
    with pytest.raises(Problem) as caught:
        await asyncio.to_thread(WebSocket.connect, str(sock), "/refuse", 10)
    assert caught.value.status == 409 and "force=true" in caught.value.detail


def test_long_lived_routes_are_told_apart() -> None:
    """The event stream, consoles and channels skip the request limit; nothing else does."""
    assert is_stream("/v1/events")
    assert is_stream("/v1/domains/web/console")
    assert is_stream("/v1/domains/web/channels/org.qemu.guest_agent.0")
    assert not is_stream("/v1/domains/web")
    assert not is_stream("/v1/domains/console")
    assert not is_stream("/v1/ops/domain.console")
