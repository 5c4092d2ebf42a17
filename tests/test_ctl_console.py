"""`virtmonctl console`'s raw terminal in a real terminal (tests.terminal): a signal mid-session
leaves the terminal's settings as they were. The lab tests drive the whole command
(tests/integration/test_lab_console.py)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.terminal import Terminal

RAW_SESSION = """\
import os, time
from virtmon.ctl.console import raw_terminal
with raw_terminal(0):
    os.write(1, f"raw pid={os.getpid()}\\r\\n".encode())
    time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
async def test_a_signal_in_raw_mode_restores_the_terminal(short_tmp: Path, signum: int) -> None:
    """SIGTERM or SIGHUP while the terminal is raw: `stty -a` after is what it was before."""
    before, after = short_tmp / "stty.before", short_tmp / "stty.after"
    script = (f"stty -a > {before}; {sys.executable} -c '{RAW_SESSION}'; echo exit=$?; "
              f"stty -a > {after}")
    terminal = Terminal(["sh", "-c", script], dict(os.environ))
    try:
        shown = await asyncio.to_thread(terminal.read_until, lambda s: b"raw pid=" in s)
        pid = int(re.search(rb"raw pid=(\d+)", shown).group(1))  # type: ignore[union-attr]
        os.kill(pid, signum)
        await asyncio.to_thread(terminal.read_until, lambda s: b"exit=" in s)
    finally:
        await asyncio.to_thread(terminal.close)
    assert "speed" in before.read_text()
    assert after.read_text() == before.read_text()
