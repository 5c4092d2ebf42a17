"""The manual pages of virtmon and virtmonctl, written from their parsers, rendered by groff."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from virtmon import manpage
from virtmon.ctl.cli import COMMANDS


def rendered(text: str, tmp_path: Path) -> str:
    """The page as man shows it at 80 columns; groff's warnings fail the test."""
    source = tmp_path / "page.man"
    source.write_text(text)
    proc = subprocess.run(["groff", "-man", "-Tascii", "-P-cbu", "-ww", "-rLL=80n", "-rHY=0",
                           str(source)],
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stderr == ""
    return proc.stdout


def test_virtmonctl_page_has_every_command_and_the_exit_codes(tmp_path: Path) -> None:
    """virtmonctl(1) has a section for every command and sub-command, the exit codes 0-3 and
    the environment, and groff renders it without a warning."""
    text = manpage.page("virtmonctl")
    shown = rendered(text, tmp_path)
    for command in COMMANDS:
        assert f'.SS "{manpage.roff(command.name)}"' in text, command.name
    assert '.SS "admin threadpool"' in text and '.SS "alerts silence"' in text
    exits = text.split(".SH EXIT STATUS\n", 1)[1].split(".SH ", 1)[0]
    assert [line.split()[1] for line in exits.splitlines() if line.startswith(".B ")] == [
        "0", "1", "2", "3", "130"]
    assert "VIRTMON_SOCKET" in shown and "NO_COLOR" in shown


@pytest.mark.parametrize("tool", ["virtmon", "virtmonctl"])
def test_each_page_renders_with_its_options(tool: str, tmp_path: Path) -> None:
    """Each page names the tool, its --version and each command's options (run --uri)."""
    shown = rendered(manpage.page(tool), tmp_path)
    assert shown.split()[0] == f"{tool.upper()}({manpage.SECTION[tool]})"
    assert "--version" in shown
    if tool == "virtmon":
        assert "--uri URI" in shown and "check-config" in shown


def test_roff_escapes_what_roff_would_read_as_requests() -> None:
    """A leading dot or quote cannot start a request; backslashes, hyphens and characters
    beyond ASCII are escaped."""
    assert manpage.roff(".hidden") == "\\&.hidden"
    assert manpage.roff("'quoted") == "\\&'quoted"
    assert manpage.roff("a\\b --x") == "a\\eb \\-\\-x"
    assert manpage.roff("cut with …, 5 µs") == "cut with ..., 5 \\[u00B5]s"
