"""Manual pages for ``virtmon`` and ``virtmonctl``, written from their argument parsers, so a
page never lists an option the tool lacks or misses one it has.

``python -m virtmon.manpage virtmonctl > virtmonctl.1`` (or ``virtmon``): roff for man(7).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence

from virtmon import __version__

ENVIRONMENT = {
    "virtmonctl": (
        ("VIRTMON_SOCKET", "the control socket, when --socket is not given "
                           "(default /run/virtmon/virtmon.sock)"),
        ("NO_COLOR", "when set and not empty, no colour even on a terminal"),
        ("VIRTMONCTL_PAGER, PAGER", "the pager for long output on a terminal (default less; "
                                    "empty or cat: none)"),
        ("LESS", "the pager's options when it is less (default FRSXMK)"),
        ("XDG_CACHE_HOME", "where shell completion caches the daemon's answers for 10 s"),
    ),
    "virtmon": (),
}
SEE_ALSO = {"virtmonctl": "virtmon(8), virsh(1)", "virtmon": "virtmonctl(1), libvirtd(8)"}
SECTION = {"virtmonctl": "1", "virtmon": "8"}


def roff(text: str) -> str:
    """Text escaped for roff: backslashes, hyphens, a leading dot or quote, and characters
    beyond ASCII (an ellipsis as three dots, others as ``\\[uXXXX]``, which groff reads
    whatever the page's encoding)."""
    text = text.replace("\\", "\\e").replace("-", "\\-").replace("…", "...")
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    return "\\&" + text if text.startswith((".", "'")) else text


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().removeprefix("usage: ").split())


def _subcommands(parser: argparse.ArgumentParser
                 ) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each sub-command, in the order they were added."""
    for action in parser._actions:  # argparse offers no public way to list them
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, child in action.choices.items():
                yield name, helps.get(name, child.description or ""), child


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or (
                action.help == argparse.SUPPRESS):
            continue
        if action.option_strings:
            value = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
            name = ", ".join(action.option_strings) + value
        else:
            name = str(action.metavar or action.dest)
        helped = (action.help or "") % {"default": action.default, "prog": parser.prog} if (
            action.help and "%" in action.help) else (action.help or "")
        if action.choices and not isinstance(action.choices, dict):
            helped = f"{helped} ({', '.join(map(str, action.choices))})".strip()
        lines += [".TP", f".B {roff(name)}", roff(helped or "-")]
    return lines


def _commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    lines: list[str] = []
    for name, helped, child in _subcommands(parser):
        title = f"{prefix} {name}".strip()
        lines += [f'.SS "{roff(title)}"', roff(helped), ".PP", f".B {roff(_usage(child))}"]
        lines += _options(child)
        lines += _commands(child, title)
    return lines


def page(tool: str) -> str:
    """The manual page of ``tool`` (``virtmon`` or ``virtmonctl``) in roff."""
    if tool == "virtmonctl":
        from virtmon.ctl.cli import EXIT_CODES, parser

        top = parser({})
        exits = EXIT_CODES.splitlines()[1:]
    else:
        from virtmon.cli import parser as daemon_parser

        top = daemon_parser()
        exits = []
    lines = [f'.TH {tool.upper()} {SECTION[tool]} "" "virtmon {__version__}"',
             ".SH NAME", f"{tool} \\- {roff(top.description or '')}",
             ".SH SYNOPSIS", f".B {roff(_usage(top))}",
             ".SH OPTIONS", *_options(top),
             ".SH COMMANDS", *_commands(top, "")]
    if exits:
        lines.append(".SH EXIT STATUS")
        for line in exits:
            code, _, meaning = line.strip().partition(" ")
            if code.isdigit():
                lines += [".TP", f".B {code}", roff(meaning.strip())]
            else:
                lines.append(roff(line.strip()))
    if ENVIRONMENT[tool]:
        lines.append(".SH ENVIRONMENT")
        for name, meaning in ENVIRONMENT[tool]:
            lines += [".TP", f".B {roff(name)}", roff(meaning)]
    lines += [".SH SEE ALSO", roff(SEE_ALSO[tool])]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m virtmon.manpage virtmon|virtmonctl``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in (["virtmon"], ["virtmonctl"]):
        sys.stderr.write("usage: python -m virtmon.manpage virtmon|virtmonctl\n")
        return 2
    sys.stdout.write(page(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
