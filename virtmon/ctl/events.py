"""``virtmonctl events``: the journal and, with ``--follow``, the live stream, one line per
event; ``-n N`` starts with the newest N.

The stream's own messages (heartbeat, gap, overflow, end; docs/control-api.md, "The event
stream") become warnings with where to resume (``--since SEQ``) and the exit code they mean.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from virtmon.ctl.client import Problem, Unreachable
from virtmon.ctl.command import Command, Context
from virtmon.ctl.format import iso_time
from virtmon.ctl.problems import EX_FAILED, EX_OK, EX_UNREACHABLE, UsageError, suggestion


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
            return EX_UNREACHABLE
        raise
    if args.follow and (deadline is None or time.monotonic() < deadline):
        ctx.warn(f"the daemon ended the stream (stopping?){_resume(last)}")
        return EX_UNREACHABLE
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
        return EX_UNREACHABLE
    ctx.warn(f"unknown notice {kind!r} in the event stream, ignored: {text[:200]}")
    return Continue(last)


COMMANDS: tuple[Command, ...] = (
    Command("events", "journaled events; --follow for live ones", cmd_events, args_events),
)
