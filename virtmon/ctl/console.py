"""``virtmonctl console DOMAIN [--channel NAME] [--force]``: the domain's console or a channel.

On a terminal it is a raw terminal as ``virsh console`` gives: every key goes to the guest
(Ctrl-C too) except the escape, ``Ctrl-]``, which ends it. The terminal's settings are restored
on every way out: the escape, the daemon closing the stream (the domain stopped, another client
took it over), an error, SIGTERM or SIGHUP.

Without a terminal on stdin it is a pipe: stdin's bytes go to the guest as they are, the
guest's to stdout. After stdin's end, what the guest still sends is printed until it has been
quiet for ``--wait`` seconds (1 by default; the guest answers what it was sent), then the stream
is closed; the daemon closing it ends it sooner.

Exit codes: 0 the escape, stdin's end, or the domain stopping; 1 the stream refused (409: taken,
404, ...) or ended by anything else (taken over, a slow client, libvirt); 3 unreachable.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator
from types import FrameType
from typing import Any
from urllib.parse import quote, urlencode

from virtmon.ctl.client import Problem, Unreachable, _unreachable
from virtmon.ctl.command import Command, Context
from virtmon.ctl.problems import EX_FAILED, EX_OK, Failed, general
from virtmon.ctl.websocket import Closed, ProtocolError, WebSocket

ESCAPE = b"\x1d"  # Ctrl-]
# Close codes after which the stream ended as it should (docs/control-api.md).
NORMAL_ENDS = {1000, 4000}
READ_SIZE = 64 * 1024


class Signalled(Exception):
    """SIGTERM or SIGHUP arrived: end, restoring the terminal on the way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def target(domain: str, channel: str | None, force: bool) -> str:
    """The route of the console or the channel."""
    path = f"/v1/domains/{quote(domain, safe='')}/" + (
        "console" if channel is None else f"channels/{quote(channel, safe='')}")
    return path + (f"?{urlencode({'force': 'true'})}" if force else "")


def connect(ctx: Context, args: argparse.Namespace) -> WebSocket:
    """The stream, or the daemon's refusal said in the command line's words."""
    path = ctx.client.path
    what = "console" if args.channel is None else f"channel {args.channel}"
    try:
        return WebSocket.connect(path, target(args.domain, args.channel, args.force),
                                 ctx.client.timeout)
    except Problem as exc:
        if exc.status == 409 and "force" in exc.detail:
            raise Failed(f"the {what} of {args.domain} is in use: {exc.detail}") from None
        raise general(exc) from None
    except OSError as exc:
        raise _unreachable(path, exc) from None
    except ProtocolError as exc:
        raise Unreachable(path, str(exc)) from None


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal in raw mode, restored however the block ends (SIGTERM and SIGHUP become
    :class:`Signalled` so that it is)."""
    saved = termios.tcgetattr(fd)

    def signalled(signum: int, _frame: FrameType | None) -> None:
        raise Signalled(signum)

    previous = {s: signal.signal(s, signalled) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def interactive(ws: WebSocket, stdin: int, stdout: int) -> Closed | None:
    """Keys to the guest, its output to the terminal, until the escape (None) or a close."""
    while True:
        if not ws.pending():
            watched: list[Any] = [stdin, ws]
            ready = select.select(watched, [], [])[0]
        else:
            ready = [ws]
        if stdin in ready:
            keys = os.read(stdin, READ_SIZE)
            before, escape, _ = keys.partition(ESCAPE)
            if before:
                ws.send(before)
            if escape or not keys:
                ws.close(1000, "escape")
                return None
        if ws in ready:
            message = ws.receive()
            if isinstance(message, Closed):
                return message
            _write_all(stdout, message)


def piped(ws: WebSocket, stdin: int, stdout: int, wait: float) -> Closed | None:
    """stdin to the guest until its end, the guest's output to stdout until it has been quiet
    for ``wait`` seconds after that (None), or the daemon closes (its Closed)."""
    stdin_open = True
    quiet_since = 0.0
    while True:
        watched: list[Any] = [ws, stdin] if stdin_open else [ws]
        timeout = None if stdin_open else max(quiet_since + wait - time.monotonic(), 0)
        ready = [ws] if ws.pending() else select.select(watched, [], [], timeout)[0]
        if not ready:
            ws.close(1000, "end of input")
            _drain(ws)
            return None
        if stdin_open and stdin in ready:
            data = os.read(stdin, READ_SIZE)
            if data:
                ws.send(data)
            else:
                stdin_open = False
                quiet_since = time.monotonic()
        if ws in ready:
            message = ws.receive()
            if isinstance(message, Closed):
                return message
            _write_all(stdout, message)
            quiet_since = time.monotonic()


def _drain(ws: WebSocket) -> None:
    """After our close: what the daemon still sends is dropped until its close (2 s at most)."""
    ws.sock.settimeout(2.0)
    with contextlib.suppress(OSError, ProtocolError):
        while not isinstance(ws.receive(), Closed):
            pass


def cmd_console(ctx: Context, args: argparse.Namespace) -> int:
    """Bridge the terminal (or stdin/stdout) to the console or channel."""
    if args.wait < 0:
        raise Failed("--wait must be 0 or more seconds")
    ws = connect(ctx, args)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout.flush()
    what = "console" if args.channel is None else f"channel {args.channel}"
    try:
        if os.isatty(stdin):
            ctx.err.write(f"Connected to the {what} of {args.domain}\r\n"
                          "Escape character is ^] (Ctrl + ])\r\n")
            ctx.err.flush()
            try:
                with raw_terminal(stdin):
                    closed = interactive(ws, stdin, stdout)
            except Signalled as exc:
                ws.close(1001, f"virtmonctl got {exc}")
                return 128 + exc.signum
            ctx.err.write("\n")
        else:
            closed = piped(ws, stdin, stdout, args.wait)
    except BrokenPipeError:
        raise  # our stdout's reader went away: virtmonctl ends quietly
    except (OSError, ProtocolError) as exc:
        raise Unreachable(ctx.client.path, f"the stream broke: {exc}") from None
    finally:
        ws.sock.close()
    if closed is None:
        return EX_OK
    ctx.warn(f"the {what} of {args.domain} closed: {closed.reason or 'no reason given'} "
             f"({closed.code})")
    return EX_OK if closed.code in NORMAL_ENDS else EX_FAILED


def args_console(p: argparse.ArgumentParser) -> None:
    p.add_argument("domain", metavar="DOMAIN", help="name, UUID or id of a running domain")
    p.add_argument("--channel", metavar="NAME",
                   help="a channel by its target name (org.qemu.guest_agent.0, ...) instead "
                        "of the console")
    p.add_argument("--force", action="store_true",
                   help="take the console or channel over from the client that has it")
    p.add_argument("--wait", type=float, default=1.0, metavar="SECONDS",
                   help="without a terminal: after stdin's end, print the guest's output until "
                        "it has been quiet this long (default 1)")


COMMANDS: tuple[Command, ...] = (
    Command("console", "the domain's console or a channel (escape: Ctrl-])", cmd_console,
            args_console),
)
