"""``virtmonctl alerts ...``: alerts, the outbox, dead letters, silences and test alerts.

One command whose actions each run one ``alerts.*`` operation; tables for people, the
operation's result with ``--json``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from virtmon.ctl.command import Command, Context, call
from virtmon.ctl.format import ago, human_seconds, iso_time, scalar
from virtmon.ctl.problems import EX_OK, UsageError

Column = tuple[str, Callable[[Mapping[str, Any]], str]]


def _field(key: str, width: int = 0) -> Callable[[Mapping[str, Any]], str]:
    def text(row: Mapping[str, Any]) -> str:
        value = scalar(key, row.get(key))
        return value if not width or len(value) <= width else value[:width - 1] + "…"
    return text


def _ago(key: str) -> Callable[[Mapping[str, Any]], str]:
    """A time as how long ago it was (``105s ago``) or is to come (``in 3s``); ``-`` unset."""
    def text(row: Mapping[str, Any]) -> str:
        value = row.get(key)
        if not isinstance(value, (int, float)) or value <= 0:
            return "-"
        return ago(float(value)) if abs(value - time.time()) < 86400 * 2 else iso_time(
            float(value))
    return text


def _rows(ctx: Context, columns: Sequence[Column], items: Sequence[Mapping[str, Any]],
          empty: str) -> None:
    if not items:
        ctx.line(empty)
        return
    ctx.table([name for name, _ in columns],
              [[cell(item) for _, cell in columns] for item in items])


ALERT_COLUMNS: tuple[Column, ...] = (
    ("STATE", _field("state")),
    ("SEVERITY", _field("severity")), ("RULE", _field("rule")), ("DOMAIN", _field("domain")),
    ("STARTED", _ago("starts_at")), ("COUNT", _field("count")),
    ("SILENCED", lambda a: f"by {a['silence_id']}" if a.get("silenced") else "-"),
    ("SUMMARY", _field("summary", 60)), ("FINGERPRINT", _field("fingerprint")),
)
ROW_COLUMNS: tuple[Column, ...] = (
    ("ID", _field("id")), ("RECEIVER", _field("receiver")), ("STATUS", _field("status")),
    ("RULE", _field("rule")), ("KEY", _field("key")), ("ATTEMPTS", _field("attempts")),
    ("NEXT", _ago("next_attempt")), ("LAST ERROR", _field("last_error", 60)),
)
DEAD_COLUMNS: tuple[Column, ...] = (
    ("ID", _field("id")), ("RECEIVER", _field("receiver")), ("URL", _field("url")),
    ("STATUS", _field("status")), ("RULE", _field("rule")), ("ATTEMPTS", _field("attempts")),
    ("LAST ERROR", _field("last_error", 60)),
)
QUEUE_COLUMNS: tuple[Column, ...] = (
    ("RECEIVER", _field("receiver")), ("URL", _field("url")), ("PENDING", _field("pending")),
    ("OLDEST AGE", lambda q: "-" if q.get("oldest_age") is None else human_seconds(
        float(q["oldest_age"]))),
)
SILENCE_COLUMNS: tuple[Column, ...] = (
    ("ID", _field("id")), ("RULE", _field("rule")), ("DOMAIN", _field("domain")),
    ("ENDS", _ago("ends_at")), ("ACTIVE", _field("active")), ("COMMENT", _field("comment", 60)),
)


def _call(ctx: Context, operation: str, **arguments: Any) -> Any:
    result = call(ctx, operation, {k: v for k, v in arguments.items() if v is not None})
    if ctx.json:
        ctx.document(result)
    return result


def alerts_list(ctx: Context, args: argparse.Namespace) -> int:
    """``alerts list``: stored alerts, newest first."""
    result = _call(ctx, "alerts.list", state=args.state, rule=args.rule, domain=args.domain,
                   limit=args.limit)
    if not ctx.json:
        _rows(ctx, ALERT_COLUMNS, result["alerts"], "no alerts")
    return EX_OK


def alerts_outbox(ctx: Context, args: argparse.Namespace) -> int:
    """``alerts outbox``: queue depth per receiver URL, then the pending rows."""
    result = _call(ctx, "alerts.outbox", receiver=args.receiver, limit=args.limit)
    if not ctx.json:
        _rows(ctx, QUEUE_COLUMNS, result["queues"], "no receivers configured")
        ctx.line("")
        _rows(ctx, ROW_COLUMNS, result["rows"], "nothing pending")
    return EX_OK


def alerts_dead(ctx: Context, args: argparse.Namespace) -> int:
    """``alerts dead``: dead letters, newest first."""
    result = _call(ctx, "alerts.dead_letters", receiver=args.receiver, limit=args.limit)
    if not ctx.json:
        _rows(ctx, DEAD_COLUMNS, result["rows"], "no dead letters")
    return EX_OK


def alerts_retry(ctx: Context, args: argparse.Namespace) -> int:
    """``alerts retry ID|--all``."""
    if (args.id is None) == (not args.all):
        raise UsageError("alerts retry needs a dead letter's ID or --all (not both)")
    result = _call(ctx, "alerts.retry_dead", id=args.id, all=args.all or None)
    if not ctx.json:
        ctx.line(f"{result['retried']} dead letter(s) queued again")
        if result.get("superseded"):
            ctx.line(f"{result['superseded']} dead letter(s) dropped: a later change of the same "
                     "alert went to the receiver after them")
    return EX_OK


def alerts_silence(ctx: Context, args: argparse.Namespace) -> int:
    """``alerts silence --rule R|--domain GLOB --for DURATION [--comment TEXT]``."""
    if args.rule is None and args.domain is None:
        raise UsageError("alerts silence needs --rule or --domain (or both)")
    result = _call(ctx, "alerts.silence", rule=args.rule, domain=args.domain,
                   duration=args.duration, comment=args.comment)
    if not ctx.json:
        what = " ".join(f"{k}={result[k]}" for k in ("rule", "domain") if result.get(k))
        ctx.line(f"silence {result['id']}: {what} until {iso_time(float(result['ends_at']))}")
    return EX_OK


def alerts_silences(ctx: Context, args: argparse.Namespace) -> int:
    """``alerts silences [--all]``."""
    result = _call(ctx, "alerts.silences", all=args.all or None)
    if not ctx.json:
        _rows(ctx, SILENCE_COLUMNS, result["silences"], "no silences")
    return EX_OK


def alerts_unsilence(ctx: Context, args: argparse.Namespace) -> int:
    """``alerts unsilence ID``."""
    result = _call(ctx, "alerts.unsilence", id=args.id)
    if not ctx.json:
        ctx.line(f"silence {result['id']} ended")
    return EX_OK


def alerts_test(ctx: Context, args: argparse.Namespace) -> int:
    """``alerts test RECEIVER``: a test alert through the outbox."""
    result = _call(ctx, "alerts.test", receiver=args.receiver, summary=args.summary)
    if not ctx.json:
        ctx.line(f"test alert {result['key']} queued for {result['receiver']} "
                 f"({len(result['urls'])} URL(s)); alerts outbox shows its progress")
    return EX_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def args_alerts(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="alerts_command", metavar="WHAT")

    def action(name: str, help: str, fn: Callable[[Context, argparse.Namespace], int]
               ) -> argparse.ArgumentParser:
        child: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        child.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                           help="JSON output, for scripts")
        child.set_defaults(alerts_run=fn)
        return child

    listing = action("list", "alerts, newest first (the default)", alerts_list)
    listing.add_argument("--state", choices=("all", "firing", "pending", "resolved"),
                         default="all")
    listing.add_argument("--rule", metavar="RULE", help="a rule name or glob")
    listing.add_argument("--domain", metavar="GLOB", help="a domain name glob")
    for name, help, fn in (("outbox", "pending deliveries per receiver", alerts_outbox),
                           ("dead", "dead letters (refused deliveries)", alerts_dead)):
        child = action(name, help, fn)
        child.add_argument("--receiver", metavar="NAME", help="only this receiver")
        child.add_argument("--limit", type=_positive_int, default=100, metavar="N")
    listing.add_argument("--limit", type=_positive_int, default=100, metavar="N")
    retry = action("retry", "queue a dead letter (ID) or all (--all) again", alerts_retry)
    retry.add_argument("id", nargs="?", type=int, metavar="ID")
    retry.add_argument("--all", action="store_true", help="every dead letter")
    silence = action("silence", "silence a rule and/or a domain glob for a while",
                     alerts_silence)
    silence.add_argument("--rule", metavar="RULE", help="a rule name or glob")
    silence.add_argument("--domain", metavar="GLOB", help="a domain name glob")
    silence.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                         help="e.g. 90s, 15m, 2h, 1d, 1h30m")
    silence.add_argument("--comment", default="", metavar="TEXT", help="why")
    silences = action("silences", "silences in force", alerts_silences)
    silences.add_argument("--all", action="store_true", help="ended ones too")
    unsilence = action("unsilence", "end a silence now", alerts_unsilence)
    unsilence.add_argument("id", type=int, metavar="ID")
    test = action("test", "send a test alert to a receiver (through the outbox)", alerts_test)
    test.add_argument("receiver", metavar="RECEIVER")
    test.add_argument("--summary", metavar="TEXT", help="the test alert's summary")


def cmd_alerts(ctx: Context, args: argparse.Namespace) -> int:
    """``alerts [WHAT]``: ``list`` unless another action is named."""
    if getattr(args, "alerts_run", None) is None:
        args = argparse.Namespace(**{**vars(args), "state": "all", "rule": None, "domain": None,
                                     "limit": 100})
        return alerts_list(ctx, args)
    code: int = args.alerts_run(ctx, args)
    return code


COMMANDS: tuple[Command, ...] = (
    Command("alerts", "alerts: list, outbox, dead, retry, silence, silences, unsilence, test",
            cmd_alerts, args_alerts),
)
