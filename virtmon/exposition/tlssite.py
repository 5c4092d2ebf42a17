"""The metrics listener over TLS, with every refused handshake logged.

asyncio's own TLS server (``create_server(ssl=...)``) drops a failed handshake without a word
(an ``ssl.SSLError`` is an ``OSError``, which it logs only in debug mode), so a Prometheus
without the client certificate, with the wrong CA or an old TLS version was simply never
heard of. Here the listener accepts plain TCP and runs each handshake itself
(``loop.start_tls``): a refusal is a warning ``virtmon.metrics.tls_handshake_failed`` with the
peer and OpenSSL's reason; a connection that closes before saying anything (a port check) is
logged at debug level only. At most :data:`LOG_BURST` warnings a minute; the next one says how
many were left out.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("virtmon.metrics").bind(component="metrics")

HANDSHAKE_TIMEOUT = 30.0
LOG_BURST = 10
LOG_WINDOW = 60.0


class HandshakeLog:
    """Warnings of refused handshakes, at most ``burst`` per ``window`` seconds."""

    def __init__(self, burst: int = LOG_BURST, window: float = LOG_WINDOW) -> None:
        self.burst = burst
        self.window = window
        self._start = 0.0
        self._logged = 0
        self.suppressed = 0

    def failed(self, peer: str, exc: BaseException) -> None:
        """One refused handshake."""
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            log.debug("virtmon.metrics.tls_connection_closed", peer=peer)
            return
        now = time.monotonic()
        if now - self._start >= self.window:
            self._start, self._logged = now, 0
        if self._logged >= self.burst:
            self.suppressed += 1
            return
        self._logged += 1
        extra = {"suppressed": self.suppressed} if self.suppressed else {}
        self.suppressed = 0
        reason = getattr(exc, "reason", None) or type(exc).__name__
        log.warning("virtmon.metrics.tls_handshake_failed", peer=peer, reason=str(reason),
                    error=str(exc) or type(exc).__name__, **extra)


class _Deferred(asyncio.Protocol):
    """The TLS layer's application protocol until the handshake is done: what arrives before
    the HTTP server is connected (a request sent with the handshake's last flight) is kept for
    it, then everything is passed straight on."""

    def __init__(self, app: asyncio.Protocol) -> None:
        self.app = app
        self.connected = False
        self._pending: list[bytes] = []
        self._eof = False

    def attach(self, transport: asyncio.Transport) -> None:
        """Connect the HTTP server to the TLS transport and hand it what came meanwhile."""
        self.app.connection_made(transport)
        self.connected = True
        for data in self._pending:
            self.app.data_received(data)
        self._pending.clear()
        if self._eof:
            self.app.eof_received()

    def data_received(self, data: bytes) -> None:
        if self.connected:
            self.app.data_received(data)
        else:
            self._pending.append(data)

    def eof_received(self) -> bool | None:
        if self.connected:
            return self.app.eof_received()
        self._eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connected:
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.connected:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.connected:
            self.app.resume_writing()


class _Handshake(asyncio.Protocol):
    """A TCP connection until its TLS handshake is done (or refused, and logged)."""

    def __init__(self, site: TLSSite) -> None:
        self.site = site
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # start_tls reads the ClientHello
        self.task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self.site.handshakes.add(self.task)
        self.task.add_done_callback(self.site.handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        peername = transport.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        server = self.site.runner_server()
        deferred = _Deferred(server())
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, deferred, self.site.context, server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            self.site.failures.failed(peer, exc)
            transport.abort()
            return
        if tls is None:  # the client closed during the handshake
            self.site.failures.failed(peer, ConnectionResetError())
            transport.abort()
            return
        deferred.attach(tls)

    def data_received(self, data: bytes) -> None:
        """Never called: reading is paused until start_tls takes the transport over."""


class TLSSite(web.BaseSite):
    """An aiohttp site serving TLS on a TCP address or a socket passed by systemd."""

    def __init__(self, runner: web.BaseRunner, context: ssl.SSLContext, *,
                 host: str | None = None, port: int = 0, sock: socket.socket | None = None,
                 reuse_address: bool = True) -> None:
        super().__init__(runner)
        self.context = context
        self._host, self._port, self._sock = host, port, sock
        self._reuse_address = reuse_address
        self.failures = HandshakeLog()
        self.handshakes: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        """``https://HOST:PORT``."""
        return f"https://{self._host or '0.0.0.0'}:{self._port}"

    def runner_server(self) -> Any:
        """The runner's HTTP server (a protocol factory)."""
        server = self._runner.server
        assert server is not None
        return server

    async def start(self) -> None:
        """Listen."""
        await super().start()
        loop = asyncio.get_running_loop()

        def factory() -> _Handshake:
            return _Handshake(self)

        if self._sock is not None:
            self._server = await loop.create_server(factory, sock=self._sock,
                                                    backlog=self._backlog)
        else:
            self._server = await loop.create_server(factory, self._host, self._port,
                                                    backlog=self._backlog,
                                                    reuse_address=self._reuse_address)

    async def stop(self) -> None:
        """Stop listening, and end handshakes still under way."""
        for task in list(self.handshakes):
            task.cancel()
        await super().stop()
