"""The ``virtmonctl`` command line: the parser built from every module's command table, and
:func:`main`.

Every command is one row of :data:`COMMANDS` (:class:`~virtmon.ctl.command.Command`): a name, a
help line, a function that adds its arguments and a function that runs it; each module of
commands holds its own rows. A new command (``host``, ``admin ...``, ``start``, ...) is one more
row.

Exit codes are a contract (:data:`EXIT_CODES`, shown by ``--help``; :mod:`virtmon.ctl.problems`
decides which problem document is which): 0 ok; 1 the operation failed (libvirt or virtmon said
no, or the event stream overflowed); 2 the caller's mistake; 3 virtmon cannot be reached;
130 interrupted. A closed output pipe (``virtmonctl events | head``) ends the command quietly
with 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from virtmon import __version__
from virtmon.ctl import alerts, complete, console, daemon, domains, events, ops
from virtmon.ctl.client import ControlClient, Problem, Unreachable
from virtmon.ctl.command import Command, Context
from virtmon.ctl.problems import (
    EX_INTERRUPTED,
    EX_OK,
    EX_UNREACHABLE,
    EX_USAGE,
    CtlError,
    general,
    suggestion,
)
from virtmon.ctl.terminal import start_pager, terminal_width, wants_colour

DEFAULT_SOCKET = "/run/virtmon/virtmon.sock"
SOCKET_ENV = "VIRTMON_SOCKET"

EXIT_CODES = """exit codes:
  0  done
  1  the operation failed: libvirt or virtmon said no (a refused write says how to allow it)
  2  your mistake: the command line, an unknown operation, argument or flag name, a value of
     the wrong type, a repeated KEY=VALUE, an event filter the daemon refused
  3  virtmon cannot be reached (no socket, refused, permission denied, the daemon stopped)
  130  interrupted (Ctrl-C)"""

# Every command, in the order --help lists them.
COMMANDS: tuple[Command, ...] = (*daemon.COMMANDS, *domains.COMMANDS, *console.COMMANDS,
                                 *events.COMMANDS, *ops.COMMANDS, *alerts.COMMANDS,
                                 *complete.COMMANDS)


# -- entry point ---------------------------------------------------------------------------------

INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class CtlParser(argparse.ArgumentParser):
    """argparse with a suggestion for a mistyped command or choice ("did you mean ...?")."""

    def error(self, message: str) -> Any:  # NoReturn in argparse: it exits with 2
        found = INVALID_CHOICE.search(message)
        if found:
            choices = re.findall(r"'([^']*)'", found.group(2))
            what = "command" if re.match(r"argument (COMMAND|WHAT)\b", message) else "choice"
            hint = suggestion(found.group(1), choices) or f" (one of {', '.join(choices)})"
            message = f"unknown {what} {found.group(1)!r}{hint}"
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: {message}\n")


def parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line, built from :data:`COMMANDS`."""
    top = CtlParser(prog="virtmonctl", description="client of the virtmon control socket",
                    epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--socket", default=environ.get(SOCKET_ENV) or DEFAULT_SOCKET,
                     help=f"control socket (default: ${SOCKET_ENV} or {DEFAULT_SOCKET})")
    top.add_argument("--json", action="store_true", help="JSON output, for scripts")
    top.add_argument("--no-pager", action="store_true",
                     help="never page long output (on a terminal it goes through "
                          "$VIRTMONCTL_PAGER, $PAGER or less, as systemctl does)")
    top.add_argument("-l", "--full", action="store_true",
                     help="long lines whole on a terminal (without a pager they end in …)")
    top.add_argument("--version", action="version", version=f"virtmonctl {__version__}")
    # --json and --no-pager are accepted after the command too (`virtmonctl events --json`);
    # SUPPRESS keeps a subcommand's absent flag from overwriting the global one.
    common = CtlParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="JSON output, for scripts")
    common.add_argument("--no-pager", action="store_true", default=argparse.SUPPRESS,
                        help="never page long output")
    common.add_argument("-l", "--full", action="store_true", default=argparse.SUPPRESS,
                        help="long lines whole on a terminal, not cut with …")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.help,
                               parents=[common], add_help=command.add_help)
        command.arguments(child)
        child.set_defaults(run=command.run)
    return top


def _quiet_stdout(out: TextIO) -> None:
    """After a broken pipe, point stdout at /dev/null so the exit-time flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # not a real file (a test's StringIO): nothing will flush it at exit


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one ``virtmonctl`` command; the exit code (see :data:`EXIT_CODES`)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    words = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    command_line = parser(env)
    if words[:1] == ["__complete"]:  # the completion script's question: never an error
        for word in complete.candidates(command_line, words[1:], env):
            out.write(word + "\n")
        return EX_OK
    try:  # argparse writes to sys.stdout/sys.stderr and exits: here, to ours, with its code
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if not words:
                command_line.print_help()
                return EX_OK
            args = command_line.parse_args(words)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EX_USAGE
    colour = not args.json and wants_colour(out, env)
    pager = None if args.no_pager or not pageable(args) else start_pager(out, env)
    width = None if args.json or args.full or pager is not None else terminal_width(out)
    ctx = Context(ControlClient(args.socket), args.json, out if pager is None else pager.stream,
                  err, colour, width)
    try:
        return _run(ctx, args)
    finally:
        if pager is not None:
            pager.close()


def pageable(args: argparse.Namespace) -> bool:
    """Whether a command's output may go through a pager: all but a followed stream."""
    return not (args.command == "events" and args.follow) and args.command != "console"


def _run(ctx: Context, args: argparse.Namespace) -> int:
    try:
        code: int = args.run(ctx, args)
        return code
    except Problem as exc:
        return _fail(ctx, general(exc))
    except CtlError as exc:
        return _fail(ctx, exc)
    except Unreachable as exc:
        ctx.warn(str(exc))
        return EX_UNREACHABLE
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except BrokenPipeError:  # the reader went away: a closed pipe, or a pager quit early
        _quiet_stdout(ctx.out)
        return EX_OK


def _fail(ctx: Context, error: CtlError) -> int:
    ctx.warn(str(error))
    return error.code

