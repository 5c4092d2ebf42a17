"""``virtmonctl`` on a terminal: colour for states and severities, and a pager for long output,
as systemctl does; neither when the output goes to a pipe or a file.

Colour honours ``NO_COLOR`` (https://no-color.org: present and not empty turns it off) and
``TERM=dumb``. The pager is ``$VIRTMONCTL_PAGER``, else ``$PAGER``, else ``less``, with
``LESS=FRSXMK`` unless ``LESS`` is set (F: output that fits the screen is printed and the pager
exits, R: colours pass, S: long lines are cut, not wrapped, X: the screen is not cleared, K:
Ctrl-C quits); an empty value or ``cat`` means no pager, and so does ``--no-pager``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO, cast

RESET = "\x1b[0m"
GREEN, YELLOW, RED, BOLD_RED, DIM = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[1;31m", "\x1b[2m"
# The colour of a value of a STATE or SEVERITY column (or key): domain states, alert states and
# severities.
COLOURS = {
    "running": GREEN, "firing": RED, "resolved": GREEN, "pending": YELLOW,
    "paused": YELLOW, "pmsuspended": YELLOW, "blocked": YELLOW, "in shutdown": YELLOW,
    "shutoff": DIM, "shut off": DIM, "crashed": BOLD_RED, "nostate": DIM,
    "critical": BOLD_RED, "error": RED, "warning": YELLOW, "info": DIM,
}
COLOURED_KEYS = ("state", "severity")
DEFAULT_LESS = "FRSXMK"


ESCAPE_RE = re.compile(r"\x1b\[[0-9;]*m")


def ellipsized(text: str, width: int) -> str:
    """``text`` cut to ``width`` visible characters with "…" at the end (colour codes do not
    count, and one that was cut is reset)."""
    if len(ESCAPE_RE.sub("", text)) <= width:
        return text
    out: list[str] = []
    visible = 0
    position = 0
    while position < len(text) and visible < width - 1:
        escape = ESCAPE_RE.match(text, position)
        if escape:
            out.append(escape.group())
            position = escape.end()
            continue
        out.append(text[position])
        visible += 1
        position += 1
    return "".join(out) + (RESET if "\x1b[" in text else "") + "…"


def terminal_width(stream: TextIO) -> int | None:
    """The terminal's columns, when ``stream`` is one."""
    if not is_terminal(stream):
        return None
    try:
        return os.get_terminal_size(stream.fileno()).columns or None
    except (OSError, ValueError):
        return None


def is_terminal(stream: TextIO) -> bool:
    """Whether a stream is a terminal (a test's StringIO is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def wants_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and not with ``NO_COLOR`` or ``TERM=dumb``."""
    return (is_terminal(stream) and not environ.get("NO_COLOR")
            and environ.get("TERM", "") != "dumb")


def paint(key: str, text: str, padded: str | None = None) -> str:
    """``padded`` (default ``text``) in the colour of ``text`` when ``key`` is a state or a
    severity and the value has one; unchanged otherwise."""
    shown = text if padded is None else padded
    name = key.rsplit(".", 1)[-1].lower()
    colour = COLOURS.get(text.split(" (")[0]) if name in COLOURED_KEYS else None
    return f"{colour}{shown}{RESET}" if colour else shown


@dataclass(slots=True)
class Pager:
    """A running pager: write to ``stream``, then :meth:`close`."""

    process: subprocess.Popen[str]
    stream: TextIO

    def close(self) -> None:
        """End the input and wait for the reader to quit the pager."""
        with contextlib.suppress(BrokenPipeError):  # the pager was quit before the end
            self.stream.close()
        while True:
            try:
                self.process.wait()
                return
            except KeyboardInterrupt:
                continue  # Ctrl-C is the pager's (K): it quits, then so do we


def pager_command(environ: Mapping[str, str]) -> str:
    """The pager to run ('' for none)."""
    command = environ.get("VIRTMONCTL_PAGER", environ.get("PAGER", "less")).strip()
    return "" if command in ("", "cat") else command


def start_pager(out: TextIO, environ: Mapping[str, str]) -> Pager | None:
    """A pager reading what would go to ``out``, when ``out`` is a terminal; else None."""
    command = pager_command(environ)
    if not command or not is_terminal(out):
        return None
    env = dict(environ)
    env.setdefault("LESS", DEFAULT_LESS)
    try:
        process = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, stdout=out,
                                   env=env, text=True, encoding="utf-8", errors="replace")
    except OSError:
        return None  # no such pager: print as if there were none
    assert process.stdin is not None
    return Pager(process, cast(TextIO, process.stdin))
