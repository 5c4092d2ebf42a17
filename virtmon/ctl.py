"""``virtmonctl``: the command-line client of virtmon's control socket.

It talks HTTP/1.1 + JSON over the Unix socket with the standard library only
(:mod:`virtmon.control.client`), so it starts fast and never imports libvirt or aiohttp.

Every command is one row of :data:`COMMANDS`: a name, a help line, a function that adds its
arguments and a function that runs it. A new command (``host``, ``admin ...``, ``start``, ...) is
one more row.

Exit codes are a contract (:data:`EXIT_CODES`, shown by ``--help``; :mod:`virtmon.ctl_problems`
decides which problem document is which): 0 ok; 1 the operation failed (libvirt or virtmon said
no, or the event stream overflowed); 2 the caller's mistake; 3 virtmon cannot be reached;
130 interrupted. A closed output pipe (``virtmonctl events | head``) ends the command quietly
with 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote

from virtmon import __version__
from virtmon.control.client import ControlClient, Problem, Unreachable
from virtmon.ctl_format import iso_time, lines_of, scalar, table
from virtmon.ctl_problems import (
    EX_FAILED,
    EX_OK,
    EX_UNAVAILABLE,
    EX_USAGE,
    CtlError,
    Failed,
    UsageError,
    general,
    suggestion,
    text_of,
)
from virtmon.ctl_terminal import ellipsized, start_pager, terminal_width, wants_colour

__all__ = ["EX_FAILED", "EX_INTERRUPTED", "EX_OK", "EX_UNAVAILABLE", "EX_USAGE", "Failed",
           "UsageError", "main"]

DEFAULT_SOCKET = "/run/virtmon/virtmon.sock"
SOCKET_ENV = "VIRTMON_SOCKET"

EX_INTERRUPTED = 130  # 128 + SIGINT
EXIT_CODES = """exit codes:
  0  done
  1  the operation failed: libvirt or virtmon said no (a refused write says how to allow it)
  2  your mistake: the command line, an unknown operation, argument or flag name, a value of
     the wrong type, a repeated KEY=VALUE, an event filter the daemon refused
  3  virtmon cannot be reached (no socket, refused, permission denied, the daemon stopped)
  130  interrupted (Ctrl-C)"""


@dataclass(frozen=True, slots=True)
class Context:
    """What a command runs with: the client, the output mode and the streams."""

    client: ControlClient
    json: bool
    out: TextIO
    err: TextIO
    colour: bool = False  # states and severities in colour (a terminal without NO_COLOR)
    # A terminal's width when output goes straight to it: longer lines end in "…" there, as
    # systemctl's do (--full prints them whole; a pager cuts them itself).
    width: int | None = None

    def line(self, text: str) -> None:
        """One line of output, flushed at once (a reader of a pipe sees it now)."""
        self.out.write((text if self.width is None else ellipsized(text, self.width)) + "\n")
        self.out.flush()

    def warn(self, text: str) -> None:
        """A message on stderr."""
        self.err.write(f"virtmonctl: {text}\n")
        self.err.flush()

    def document(self, doc: Any) -> None:
        """A JSON document, pretty-printed (never cut to the terminal's width)."""
        self.out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        self.out.flush()


@dataclass(frozen=True, slots=True)
class Command:
    """One ``virtmonctl`` command: a row of the command table."""

    name: str
    help: str
    run: Callable[[Context, argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda _parser: None
    # False: the command reads --help itself (``call OP --help`` asks the daemon about OP).
    add_help: bool = True


# -- formatting ----------------------------------------------------------------------------------

def show(ctx: Context, result: Any, done: str = "done") -> None:
    """A result for people (or as JSON with --json)."""
    if ctx.json:
        ctx.document(result)
        return
    for text in lines_of(result, done, ctx.colour):
        ctx.line(text)


def event_line(event: Mapping[str, Any]) -> str:
    """One event on one line: seq, time, domain, kind, name/detail, synthetic marker."""
    what = event.get("name") or "-"
    if event.get("detail"):
        what += f"/{event['detail']}"
    parts = [str(event.get("seq")), iso_time(float(event.get("time") or 0)),
             event.get("domain") or "-", event.get("kind") or "-", what]
    if event.get("synthetic"):
        parts.append("synthetic")
    return " ".join(parts)


# -- commands ------------------------------------------------------------------------------------

def cmd_status(ctx: Context, _args: argparse.Namespace) -> int:
    """``status``: the daemon's state."""
    show(ctx, ctx.client.get("/v1/status"))
    return EX_OK


DOMAIN_COLUMNS = ("name", "state", "id", "persistent", "uuid")


def args_domains(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true", help="ask libvirt, not the inventory")


def cmd_domains(ctx: Context, args: argparse.Namespace) -> int:
    """``domains [--fresh]``: every domain, from the daemon's inventory (or libvirt)."""
    doc = ctx.client.get("/v1/domains", [("fresh", "1")] if args.fresh else [])
    if ctx.json:
        ctx.document(doc)
        return EX_OK
    domains = sorted(doc.get("domains", []), key=lambda d: str(d.get("name")))
    rows = [[scalar(c, d.get(c)) for c in DOMAIN_COLUMNS] for d in domains]
    for text in table([c.upper() for c in DOMAIN_COLUMNS], rows, ctx.colour):
        ctx.line(text)
    return EX_OK


def args_domain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("verb", nargs="?", metavar="VERB",
                        help="start, stop, shutdown, destroy, suspend, resume, reboot, reset, "
                             "undefine; none: show the domain")
    parser.add_argument("domain", metavar="NAME|UUID|ID", help="the domain")
    parser.add_argument("--fresh", action="store_true", help="ask libvirt, not the inventory")


def cmd_domain(ctx: Context, args: argparse.Namespace) -> int:
    """``domain [VERB] NAME|UUID|ID``: one domain (what ``virsh dominfo`` shows), or a
    lifecycle verb on it."""
    if args.verb is not None:
        from virtmon.ctl_ops import VERBS, run

        if args.verb not in VERBS:
            raise UsageError(f"unknown verb {args.verb!r}{suggestion(args.verb, VERBS)} "
                             f"(one of {', '.join(VERBS)})")
        return run(ctx, VERBS[args.verb], {"domain": args.domain},
                   f"{args.domain}: {args.verb} done")
    if args.fresh:
        doc = ctx.client.get("/v1/domains/" + quote(args.domain, safe=""), [("fresh", "1")])
    else:
        doc = ctx.client.domain(args.domain)
    if ctx.json:
        ctx.document(doc)
        return EX_OK
    show(ctx, domain_info(ctx, doc))
    return EX_OK


# What ``domain NAME`` shows beside the name, UUID and id: (label, operation, how to show it).
DOMINFO: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("os_type", "domain.os_type", lambda r: r),
    ("state", "domain.state",
     lambda r: f"{r['state']['name']} ({r['reason']['name']})"),
    ("vcpus", "domain.info", lambda r: r["vcpus"]),
    ("cpu_time_ns", "domain.info", lambda r: r["cpu_time_ns"]),
    ("max_memory_kib", "domain.info", lambda r: r["max_memory_kib"]),
    ("memory_kib", "domain.info", lambda r: r["memory_kib"]),
    ("persistent", "domain.is_persistent", lambda r: r),
    ("autostart", "domain.autostart", lambda r: r),
    ("managed_save", "domain.has_managed_save", lambda r: r),
)


def domain_info(ctx: Context, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The fields ``virsh dominfo`` shows, asked of libvirt by the domain's UUID (the same
    with or without ``--fresh``); what libvirt cannot answer now is ``-``, with a warning."""
    shown: dict[str, Any] = {"id": doc.get("id"), "name": doc.get("name"),
                             "uuid": doc.get("uuid")}
    results: dict[str, Any] = {}
    for label, operation, pick in DOMINFO:
        if operation not in results:
            try:
                results[operation] = ctx.client.call(operation, domain=str(doc.get("uuid")))
            except Problem as exc:
                results[operation] = None
                ctx.warn(f"{operation}: {text_of(exc)}")
        result = results[operation]
        shown[label] = None if result is None else pick(result)
    return shown


def cmd_version(ctx: Context, _args: argparse.Namespace) -> int:
    """``version``: this client's version, then the daemon's (exit 3 if it cannot be reached)."""
    if ctx.json:
        ctx.document({"virtmonctl": __version__,
                      "virtmon": ctx.client.get("/v1/status").get("version")})
        return EX_OK
    ctx.line(f"virtmonctl {__version__}")
    ctx.line(f"virtmon {ctx.client.get('/v1/status').get('version')} (the daemon at "
             f"{ctx.client.path})")
    return EX_OK


def args_completion(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=("bash", "zsh"),
                        help="e.g. virtmonctl completion bash > "
                             "/etc/bash_completion.d/virtmonctl")


def cmd_completion(ctx: Context, args: argparse.Namespace) -> int:
    """``completion bash|zsh``: the shell's completion script."""
    from virtmon.ctl_complete import script

    ctx.out.write(script(args.shell))
    return EX_OK


def cmd_openapi(ctx: Context, _args: argparse.Namespace) -> int:
    """``openapi``: the control API's OpenAPI document (JSON in either mode)."""
    ctx.document(ctx.client.get("/v1/openapi.json"))
    return EX_OK


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more, not {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def args_events(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep going: print events as they happen")
    parser.add_argument("--since", type=_non_negative_int, metavar="SEQ",
                        help="start after this sequence number (replays the journal, no gap)")
    parser.add_argument("--domain", action="append", metavar="NAME",
                        help="only this domain (repeatable)")
    parser.add_argument("--kind", action="append", metavar="KIND",
                        help="only this kind, e.g. lifecycle (repeatable)")
    parser.add_argument("-n", "--lines", type=_non_negative_int, metavar="N",
                        help="the newest N events (like journalctl -n); with --follow, then "
                             "the live ones")
    parser.add_argument("--count", type=_non_negative_int, metavar="N",
                        help="stop after N events (exit 0)")
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                        help="stop after SECONDS (exit 0)")


def _query(args: argparse.Namespace, follow: bool, since: int | None
           ) -> list[tuple[str, str]]:
    query: list[tuple[str, str]] = [("follow", "1" if follow else "0")]
    if since is not None:
        query.append(("since", str(since)))
    query += [("domain", d) for d in args.domain or ()]
    query += [("kind", k) for k in args.kind or ()]
    return query


def _event(text: str) -> dict[str, Any] | None:
    """A line of the stream as an event; None for a notice (or anything else)."""
    try:
        item = json.loads(text)
    except ValueError:
        return None
    return item if isinstance(item, dict) and "seq" in item else None


def print_newest(ctx: Context, args: argparse.Namespace) -> int:
    """``events -n N``: the newest N events that match, oldest first; the position after which
    the live ones follow (the journal's end when the read began, or the last one printed).

    Without filters the read starts N before the journal's end; with them the whole journal
    (from ``--since``) is read and only the last N kept. Retention gaps are not reported: no
    position was asked for."""
    end = int(ctx.client.get("/v1/status")["journal"]["last_seq"])
    since = args.since
    if since is None and not (args.domain or args.kind):
        since = max(end - args.lines, 0)
    newest: deque[tuple[int, str]] = deque(maxlen=args.lines)
    for raw in _event_lines(ctx, _query(args, False, since), None):
        text = raw.decode(errors="replace").rstrip("\r\n")
        event = _event(text)
        if event is not None:
            newest.append((int(event["seq"]), text if ctx.json else event_line(event)))
    for _seq, text in newest:
        ctx.line(text)
    return max([end, *(seq for seq, _ in newest)])


def cmd_events(ctx: Context, args: argparse.Namespace) -> int:
    """``events``: the journal and, with ``--follow``, the live stream, one line per event;
    ``-n N`` starts with the newest N."""
    if args.lines is not None:
        position = print_newest(ctx, args)
        if not args.follow:
            return EX_OK
        args = argparse.Namespace(**{**vars(args), "since": position, "lines": None})
    query = _query(args, args.follow, args.since)
    if args.count == 0:
        return EX_OK
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    last: int | None = args.since  # where to resume; unknown until an event or --since
    printed = 0
    try:
        for raw in _event_lines(ctx, query, deadline):
            text = raw.decode(errors="replace").rstrip("\r\n")
            try:
                item = json.loads(text)
            except ValueError:
                item = None
            if not isinstance(item, dict) or "seq" not in item:
                notice = _notice(ctx, item, text, last)
                if isinstance(notice, Continue):
                    last = notice.last
                    continue
                return notice
            ctx.line(text if ctx.json else event_line(item))
            last = int(item["seq"])
            printed += 1
            if args.count is not None and printed >= args.count:
                return EX_OK
    except Unreachable as exc:
        if printed or args.follow:
            ctx.warn(f"{exc}{_resume(last)}")
            return EX_UNAVAILABLE
        raise
    if args.follow and (deadline is None or time.monotonic() < deadline):
        ctx.warn(f"the daemon ended the stream (stopping?){_resume(last)}")
        return EX_UNAVAILABLE
    return EX_OK


def _event_lines(ctx: Context, query: list[tuple[str, str]], deadline: float | None
                 ) -> Iterator[bytes]:
    """The stream's lines; a filter or position the daemon refuses is the caller's mistake."""
    try:
        yield from ctx.client.stream("/v1/events", query, deadline)
    except Problem as exc:
        key = exc.document.get("key")
        if exc.status != 400 or not isinstance(key, str):
            raise
        if key == "kind":
            given = [v for k, v in query if k == "kind"]
            kinds = event_kinds(ctx)
            wrong = next((k for k in given if kinds and k not in kinds), given[0] if given
                         else "")
            known = suggestion(wrong, kinds) or (
                f" (known: {', '.join(kinds)})" if kinds else "")
            raise UsageError(f"unknown event kind {wrong!r}{known}") from None
        # The daemon names its query parameters; the command line has options for them.
        detail = re.sub(r"\bsince=", "--since ", exc.detail).replace(
            "without since", "without --since")
        raise UsageError(detail if key == "since" else f"--{key}: {detail}") from None


def event_kinds(ctx: Context) -> list[str]:
    """The event kinds the daemon knows (its OpenAPI document lists them); [] if unknown."""
    try:
        doc = ctx.client.get("/v1/openapi.json")
        parameters = doc["paths"]["/v1/events"]["get"]["parameters"]
        kind = next(p for p in parameters if p.get("name") == "kind")
        return [str(k) for k in kind["schema"]["items"]["anyOf"][0]["enum"]]
    except (Problem, Unreachable, KeyError, TypeError, StopIteration):
        return []


def _resume(last: int | None) -> str:
    return "" if last is None else f"; resume with --since {last}"


@dataclass(frozen=True, slots=True)
class Continue:
    """A notice after which the stream goes on, from ``last``."""

    last: int | None


def _int(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _notice(ctx: Context, item: Any, text: str, last: int | None) -> Continue | int:
    """A message of the stream's own (docs/control-api.md, "The event stream"): a heartbeat is
    skipped, a gap is a warning and the stream goes on; an overflow, the end or a line that is
    no JSON object ends the command with where to resume."""
    kind, body = next(iter(item.items())) if isinstance(item, dict) and len(item) == 1 else (
        None, None)
    if not isinstance(body, dict):
        ctx.warn(f"unexpected line in the event stream: {text[:200]!r}{_resume(last)}")
        return EX_FAILED
    if kind == "heartbeat":
        return Continue(last)
    if ctx.json:
        ctx.line(text)  # scripts see every other notice in the stream, as it came
    if kind == "gap":
        since, first = _int(body.get("since"), last), _int(body.get("first"), None)
        if first is None:
            ctx.warn(f"gap in the event stream: {text[:200]}")
            return Continue(last)
        if since is not None and since + 1 == first - 1:
            ctx.warn(f"gap: event {since + 1} is no longer in the journal (retention removed "
                     f"it); continuing from {first}")
        else:
            missed = _int(body.get("missed"), None)
            what = f"events before {first}" if since is None else (
                f"events {since + 1} to {first - 1}")
            count = f" ({missed} events)" if missed is not None else ""
            ctx.warn(f"gap: {what}{count} are no longer in the journal (retention removed "
                     f"them); continuing from {first}")
        return Continue(first - 1)
    since = _int(body.get("since"), last)
    if kind == "overflow":
        ctx.warn(f"too slow for the event stream: the daemon disconnected it{_resume(since)}")
        return EX_FAILED
    if kind == "end":
        ctx.warn(f"the daemon ended the stream (it is stopping){_resume(since)}")
        return EX_UNAVAILABLE
    ctx.warn(f"unknown notice {kind!r} in the event stream, ignored: {text[:200]}")
    return Continue(last)


COMMANDS: tuple[Command, ...] = (
    Command("status", "the daemon's state: libvirt connection, collection, journal", cmd_status),
    Command("domains", "every domain: name, state, id, persistent, UUID", cmd_domains,
            args_domains),
    Command("domain", "one domain by name, UUID or id", cmd_domain, args_domain),
    Command("events", "journaled events; --follow for live ones", cmd_events, args_events),
    Command("openapi", "the control API's OpenAPI document", cmd_openapi),
    Command("version", "virtmonctl's version and the daemon's", cmd_version),
    Command("completion", "the completion script for bash or zsh", cmd_completion,
            args_completion),
)


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
    from virtmon.ctl_alerts import COMMANDS as ALERT_COMMANDS  # these import this module
    from virtmon.ctl_ops import COMMANDS as OPERATION_COMMANDS

    for command in (*COMMANDS, *OPERATION_COMMANDS, *ALERT_COMMANDS):
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
    command_line = parser(os.environ if environ is None else environ)
    if words[:1] == ["__complete"]:  # the completion script's question: never an error
        from virtmon.ctl_complete import candidates

        for word in candidates(command_line, words[1:], os.environ if environ is None
                               else environ):
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
    env = os.environ if environ is None else environ
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
    return not (args.command == "events" and args.follow)


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
        return EX_UNAVAILABLE
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except BrokenPipeError:  # the reader went away: a closed pipe, or a pager quit early
        _quiet_stdout(ctx.out)
        return EX_OK


def _fail(ctx: Context, error: CtlError) -> int:
    ctx.warn(str(error))
    return error.code


if __name__ == "__main__":
    sys.exit(main())
