"""What every ``virtmonctl`` command runs with: the :class:`Context` (client, output mode,
streams) with its output helpers, a row of the command table (:class:`Command`), running one
operation with its problem said in the command line's words, and ``KEY=VALUE`` arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from virtmon.ctl.client import ControlClient, Problem, Unreachable
from virtmon.ctl.format import lines_of, table
from virtmon.ctl.problems import EX_OK, CtlError, UsageError, call_problem
from virtmon.ctl.terminal import ellipsized


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

    def show(self, result: Any, done: str = "done") -> None:
        """A result for people (or as JSON with --json)."""
        if self.json:
            self.document(result)
            return
        for text in lines_of(result, done, self.colour):
            self.line(text)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Rows in aligned columns (states and severities in colour on a terminal)."""
        for text in table(headers, rows, self.colour):
            self.line(text)


@dataclass(frozen=True, slots=True)
class Command:
    """One ``virtmonctl`` command: a row of the command table."""

    name: str
    help: str
    run: Callable[[Context, argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda _parser: None
    # False: the command reads --help itself (``call OP --help`` asks the daemon about OP).
    add_help: bool = True


def explained(ctx: Context, operation: str, problem: Problem) -> CtlError:
    """A problem answered to ``operation`` in the command line's words (exit 1 or 2)."""
    if problem.status not in (400, 403, 404):
        return call_problem(problem, operation, None)  # nothing the operation table explains
    try:
        ops = ctx.client.get("/v1/ops")["operations"]
    except (Problem, Unreachable, KeyError, TypeError):  # it only adds hints to the answer
        ops = None
    return call_problem(problem, operation, ops)


def call(ctx: Context, operation: str, arguments: Mapping[str, Any]) -> Any:
    """Run an operation; its result, or :class:`CtlError` in the command line's words."""
    try:
        return ctx.client.call(operation, **arguments)
    except Problem as exc:
        raise explained(ctx, operation, exc) from None


def run(ctx: Context, operation: str, arguments: Mapping[str, Any], done: str = "done") -> int:
    """Run an operation and show its result."""
    ctx.show(call(ctx, operation, arguments), done)
    return EX_OK


def value_of(text: str) -> Any:
    """A ``KEY=VALUE`` value: ``@FILE`` is the file's text, JSON if it parses, else the text."""
    if text.startswith("@"):
        return read_text(text[1:])
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_text(path: str) -> str:
    """A file's text ('-': standard input); a file that cannot be read is a usage error."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def assignments(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` words as arguments; ``a.b=1`` sets ``{"a": {"b": 1}}`` (typed params).

    A key given twice is refused rather than the last one winning silently (``domain=a
    domain=b`` would act on b: too easy to get wrong for a write)."""
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {item!r}")
        if key in seen:
            raise UsageError(f"{key} given twice ({seen[key]!r} and {item!r}): give it once"
                             + ("; several flags go in one, flags=a,b" if key == "flags" else ""))
        seen[key] = item
        head, dot, sub = key.partition(".")
        if dot:
            out.setdefault(head, {})[sub] = value_of(text)
        else:
            out[key] = value_of(text)
    return out
