"""The console and channels over the control socket, on the lab's real guest.

Each test boots its own guest (tests/lab/guest.py: a root shell on the console, an echo of
every byte on :data:`guest.ECHO_CHANNEL`) under a daemon with writes allowed, and talks to it
through ``GET /v1/domains/{domain}/console`` or ``/channels/{name}`` (a WebSocket over the Unix
socket, with aiohttp's client or virtmonctl's own), checking what comes back and libvirt's own
view of the stream afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import libvirt
import pytest

from tests.conftest import call, daemon_config, running_daemon
from tests.control.peers import unused_ids
from tests.integration.test_lab_event_catalog import unique_domain
from tests.lab import guest
from tests.lab import lab as lab_module
from tests.terminal import Terminal
from tests.waiting import exposition_until, wait_until
from virtmon.app import Daemon
from virtmon.ctl.websocket import Closed, WebSocket

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
VIRTMONCTL = str(Path(sys.executable).parent / "virtmonctl")
BOOT_TIMEOUT = 120.0
TIMEOUT = 60.0
PROMPT = b"guest# "
OPEN_ONE = "virtmon_console_streams_open 1"
# A WebSocket opening request's headers, for answers read as plain HTTP (refusals).
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@dataclass
class Env:
    """A daemon with writes allowed, and a running guest."""

    daemon: Daemon
    sock: Path
    domain: str
    dom: Any
    reader: int  # a uid with the read role only

    def url(self, what: str = "console", **query: str) -> str:
        """The WebSocket URL of the console (or ``channels/NAME``)."""
        text = "&".join(f"{k}={v}" for k, v in query.items())
        return f"http://virtmon/v1/domains/{self.domain}/{what}" + (f"?{text}" if text else "")

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """An HTTP client of the control socket."""
        async with aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.sock))) as session:
            yield session


@pytest.fixture
async def env(short_tmp: Path, lab: str, lab_conn: Any) -> AsyncIterator[Env]:
    """A booted guest (its shell answers on the console) and a daemon that may write."""
    reader = unused_ids(1)[0]
    async with unique_domain(lab, "t-console") as name:
        cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI},
                            control={"allow_write": True, "request_timeout": 20.0,
                                     "socket_mode": "0666", "read_uids": [reader]})
        async with running_daemon(cfg) as daemon:
            dom = await call(lambda: guest.create(lab_conn, name, mark=lab_module.LAB_MARK))
            yield Env(daemon, daemon.control_socket, name, dom, reader)


async def receive_until(ws: aiohttp.ClientWebSocketResponse, wanted: bytes,
                        timeout: float = TIMEOUT) -> bytes:
    """What the stream carried, once it holds ``wanted``."""
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} never came; the stream carried {seen[-400:]!r}"
        try:
            message = await ws.receive(timeout=min(left, 2.0))
        except TimeoutError:
            continue
        assert message.type == aiohttp.WSMsgType.BINARY, (message, seen[-400:])
        seen += message.data
    return seen


async def closed(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """The close message, after whatever output was still on its way."""
    while True:
        message = await ws.receive(timeout=TIMEOUT)
        if message.type != aiohttp.WSMsgType.BINARY:
            assert message.type == aiohttp.WSMsgType.CLOSE, message
            return message


async def shell_marker(ws: aiohttp.ClientWebSocketResponse, timeout: float = BOOT_TIMEOUT
                       ) -> bytes:
    """Type a command on the console until the guest's shell answers it with its marker
    (computed by the shell, so the echo of the typed line never matches)."""
    token = uuid.uuid4().hex[:12]
    wanted = f"mark-42-{token}".encode()
    deadline = time.monotonic() + timeout
    seen = b""
    while True:
        await ws.send_bytes(f"echo mark-$((40+2))-{token}\n".encode())
        try:
            return await receive_until(ws, wanted, timeout=5.0)
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"the guest's shell never answered: {seen!r}") from None


def open_directly(conn: Any, domain: str) -> None:
    """libvirt's own view: a non-forced console open on a connection of the test's own
    succeeds only if no stream holds the console (then it is closed again)."""
    dom = conn.lookupByName(domain)
    stream = conn.newStream(0)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_SAFE)
    stream.abort()


def audit(env: Env, event: str | None) -> list[dict[str, Any]]:
    """The daemon's audit records of console and channel opens or closes (None: refusals)."""
    records = env.daemon.journal.read_since(0, 100000)
    return [e.payload for e in records if e.kind == "audit"
            and e.name in ("domain.console", "domain.channel")
            and (e.payload.get("result") or {}).get("event") == event]


async def test_a_command_typed_on_the_console_prints_its_marker(env: Env) -> None:
    """The console reaches the guest's shell: a command typed prints its marker; the open and
    the close are audited, and virtmon_console_streams_open counts it while it is open."""
    async with env.session() as session, session.ws_connect(env.url()) as ws:
        shown = await shell_marker(ws)
        assert PROMPT in shown or b"mark-42-" in shown
        await exposition_until(env.daemon.scheduler, lambda t: OPEN_ONE in t.splitlines())
    await wait_until(lambda: bool(audit(env, "close")), 10, 0.1)
    await exposition_until(env.daemon.scheduler,
                           lambda t: "virtmon_console_streams_open 0" in t.splitlines())
    opened, closed = audit(env, "open"), audit(env, "close")
    assert len(opened) == 1 and opened[0]["ok"] and opened[0]["caller_role"] == "admin"
    assert closed[0]["result"]["code"] == 1000
    assert closed[0]["result"]["bytes_to_guest"] > 0 < closed[0]["result"]["bytes_from_guest"]


async def test_every_byte_value_round_trips_through_the_echo_channel(env: Env) -> None:
    """Bytes 0-255 come back unchanged through the echo channel: through the API, and
    through `virtmonctl console --channel` in a pipe."""
    every = bytes(range(256)) * 4
    async with env.session() as session, \
            session.ws_connect(env.url(f"channels/{guest.ECHO_CHANNEL}")) as ws:
        await ws.send_bytes(every)
        echoed = b""
        while len(echoed) < len(every):
            message = await ws.receive(timeout=TIMEOUT)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            echoed += message.data
        assert echoed == every
    # The guest's echo loop reopens its port after the host side closed (every 0.2 s).
    proc = await asyncio.to_thread(subprocess.run, [
        VIRTMONCTL, "--socket", str(env.sock), "console", env.domain,
        "--channel", guest.ECHO_CHANNEL, "--wait", "10"],
        input=every, capture_output=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == every


async def test_a_second_client_is_refused_and_force_takes_over(env: Env) -> None:
    """A second client of the console gets 409 (a problem document); with force=true it takes
    the console, and the first one's stream closes saying so."""
    async with env.session() as session, session.ws_connect(env.url()) as first:
        await shell_marker(first)
        async with session.get(env.url(), headers=UPGRADE) as refused:
            assert refused.status == 409
            assert refused.content_type == "application/problem+json"
            assert "force=true" in (await refused.json())["detail"]
        async with session.ws_connect(env.url(force="true")) as second:
            closing = await closed(first)
            assert first.close_code == 4001
            assert "taken over" in closing.extra
            await shell_marker(second, timeout=TIMEOUT)


async def test_a_client_that_goes_away_leaves_no_stream_behind(env: Env, lab_conn: Any) -> None:
    """A client that drops its connection mid-stream: libvirt then lets a non-forced open of
    the console succeed (no stream of the daemon's holds it), and the close is audited; a
    console another program holds is a 409 through the API."""
    ws = await asyncio.to_thread(WebSocket.connect, str(env.sock),
                                 f"/v1/domains/{env.domain}/console", TIMEOUT)
    await asyncio.to_thread(ws.send, b"echo still-here\n")
    with pytest.raises(libvirt.libvirtError, match=r"[Aa]ctive console session"):
        await call(open_directly, lab_conn, env.domain)
    ws.sock.close()  # no close frame: the connection just goes
    await wait_until(lambda: bool(audit(env, "close")), TIMEOUT, 0.1)
    await call(open_directly, lab_conn, env.domain)
    # The other way round: another program's stream holds the console, the API says 409.
    dom = await call(lab_conn.lookupByName, env.domain)
    held = await call(lab_conn.newStream, 0)
    await call(dom.openConsole, None, held, libvirt.VIR_DOMAIN_CONSOLE_SAFE)
    try:
        async with env.session() as session, session.get(env.url(), headers=UPGRADE) as taken:
            assert taken.status == 409, await taken.text()
            assert "force=true" in (await taken.json())["detail"]
    finally:
        await call(held.abort)


async def test_the_domain_stopping_ends_the_stream_with_a_message(env: Env,
                                                                  lab_conn: Any) -> None:
    """Destroying the domain closes the console's stream with code 4000 and 'stopped'; the
    console of the domain, now inactive, is then a conflict (409)."""
    async with env.session() as session, session.ws_connect(env.url()) as ws:
        await shell_marker(ws)
        await call(env.dom.destroy)
        message = await closed(ws)
        assert ws.close_code == 4000
        assert message.extra == f"domain {env.domain} stopped"
        async with session.get(env.url(), headers=UPGRADE) as again:
            assert again.status == 409, await again.text()
            assert "not running" in (await again.json())["detail"]


async def test_refusals_are_problem_documents(env: Env, lab_conn: Any) -> None:
    """Unknown domain and channel 404, a plain GET 426, and as a read-role caller
    `virtmonctl console` is refused (403) and says which role it needs."""
    headers = UPGRADE
    async with env.session() as session:
        for url, status in (("http://virtmon/v1/domains/no-such-domain/console", 404),
                            (env.url("channels/org.virtmon.nothing.0"), 404)):
            async with session.get(url, headers=headers) as answer:
                assert answer.status == status, await answer.text()
                assert answer.content_type == "application/problem+json"
        async with session.get(env.url()) as plain:
            assert plain.status == 426
    os.chmod(env.sock.parent, 0o755)
    proc = await asyncio.to_thread(subprocess.run, [
        "setpriv", f"--reuid={env.reader}", f"--regid={env.reader}", "--clear-groups",
        sys.executable, "-m", "virtmon.ctl", "--socket", str(env.sock), "console", env.domain],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL,
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")})
    assert proc.returncode == 1, proc.stderr
    assert "needs the write role and you have read" in proc.stderr, proc.stderr
    await wait_until(lambda: bool(audit(env, None)), 10, 0.1)
    refused = [r for r in audit(env, None) if r["uid"] == env.reader]
    assert refused and refused[0]["status"] == 403 and not refused[0]["ok"]


def rss_bytes() -> int:
    """This process's resident memory (the daemon runs in it)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_client_that_reads_nothing_is_cut_off_and_memory_stays_bounded(
        env: Env) -> None:
    """A client that floods the echo channel and never reads: the daemon holds at most its
    buffer, answers /v1/status meanwhile, and closes the stream as too slow (4003)."""
    ws = await asyncio.to_thread(WebSocket.connect, str(env.sock),
                                 f"/v1/domains/{env.domain}/channels/{guest.ECHO_CHANNEL}",
                                 TIMEOUT)
    ws.sock.settimeout(TIMEOUT)
    before = rss_bytes()
    chunk = os.urandom(60 * 1024)
    sent = 0

    def flood() -> None:
        nonlocal sent
        with contextlib.suppress(OSError):
            while sent < 256 << 20:
                ws.send(chunk)
                sent += len(chunk)

    flooding = asyncio.create_task(asyncio.to_thread(flood))
    peak = before
    async with env.session() as session:
        while not flooding.done():
            async with session.get("http://virtmon/v1/status") as status:
                assert status.status == 200
            peak = max(peak, rss_bytes())
            await asyncio.sleep(0.2)
    await flooding
    ws.sock.close()
    # The client reads nothing, so the close frame cannot reach it: the audit says why.
    await wait_until(lambda: bool(audit(env, "close")), TIMEOUT, 0.1)
    closed = audit(env, "close")[0]["result"]
    # Cut off because the buffer filled, not after the write timeout (30 s of growth).
    assert closed["code"] == 4003 and "output waiting for it" in closed["reason"], closed
    assert peak - before < 64 << 20, f"{(peak - before) >> 20} MiB more for {sent >> 20} MiB"


async def test_virtmonctl_console_in_a_terminal(env: Env, short_tmp: Path) -> None:
    """`virtmonctl console` in a real terminal: a command typed there prints its marker on
    the screen, Ctrl-] ends it, and the terminal's settings are as they were."""
    before, after = short_tmp / "stty.before", short_tmp / "stty.after"
    script = (f"stty -a > {before}; {shlex.quote(VIRTMONCTL)} --socket {env.sock} console "
              f"{env.domain}; echo exit=$?; stty -a > {after}")
    terminal = Terminal(["sh", "-c", script], dict(os.environ))
    try:
        await asyncio.to_thread(terminal.read_until, lambda shown: b"Ctrl + ]" in shown)
        token = uuid.uuid4().hex[:12]
        wanted = f"mark-42-{token}".encode()
        deadline = time.monotonic() + BOOT_TIMEOUT
        while wanted not in terminal.shown:
            assert time.monotonic() < deadline, terminal.shown[-400:]
            terminal.type(f"echo mark-$((40+2))-{token}\r".encode())
            with contextlib.suppress(AssertionError):
                await asyncio.to_thread(terminal.read_until, lambda s: wanted in s, 5.0)
        terminal.type(b"\x1d")
        await asyncio.to_thread(terminal.read_until, lambda s: b"exit=" in s)
    finally:
        code = await asyncio.to_thread(terminal.close)
    assert code == 0
    assert b"exit=0" in terminal.shown
    assert "speed" in before.read_text()
    assert after.read_text() == before.read_text()


def _receive_close(ws: WebSocket) -> object:
    """The stream's data until its close (blocking); the close."""
    ws.sock.settimeout(TIMEOUT)
    while True:
        message = ws.receive()
        if not isinstance(message, bytes):
            return message


async def test_the_daemon_stopping_closes_the_stream_and_frees_the_console(
        short_tmp: Path, lab: str, lab_conn: Any) -> None:
    """A daemon that stops with a console open: the client gets 1001 and a reason, and
    libvirt lets a non-forced open of the console succeed after."""
    async with unique_domain(lab, "t-console") as name:
        await call(lambda: guest.create(lab_conn, name, mark=lab_module.LAB_MARK))
        cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI},
                            control={"allow_write": True, "request_timeout": 20.0})
        async with running_daemon(cfg) as daemon:
            ws = await asyncio.to_thread(WebSocket.connect, str(daemon.control_socket),
                                         f"/v1/domains/{name}/console", TIMEOUT)
        try:
            closed = await asyncio.to_thread(_receive_close, ws)
        finally:
            ws.sock.close()
        assert closed == Closed(1001, "the daemon is stopping")
        await call(open_directly, lab_conn, name)
