"""virtmonctl in a real terminal (tests.terminal: Ctrl-C is the terminal driver's) and
completion in a real zsh, whose line editor (ZLE) runs there.

Against a daemon on libvirt's in-process test driver, on the test's event loop.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import daemon_config, running_daemon
from tests.terminal import Terminal
from virtmon.app import Daemon

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
VIRTMONCTL = str(VENV_BIN / "virtmonctl")


@pytest.fixture
async def daemon(short_tmp: Path) -> AsyncIterator[Daemon]:
    """A daemon on the test driver for one test."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        collect={"collectors": {"admin": False}})
    async with running_daemon(cfg) as running:
        yield running


async def test_ctrl_c_on_a_follower_in_a_terminal_exits_130_without_a_traceback(
        daemon: Daemon) -> None:
    """Ctrl-C typed on the terminal of `events --follow` (the terminal driver's SIGINT to the
    foreground job): exit 130, the terminal shows nothing after the ^C echo."""
    before = len(daemon.bus._subscriptions)  # no public count yet
    terminal = Terminal([VIRTMONCTL, "--socket", str(daemon.control_socket), "events",
                         "--follow"], dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while len(daemon.bus._subscriptions) <= before:
            assert time.monotonic() < deadline, "the follower never subscribed"
            await asyncio.sleep(0.05)
        terminal.type(b"\x03")
        shown = await asyncio.to_thread(terminal.read_until, lambda _shown: False)
    finally:
        code = await asyncio.to_thread(terminal.close)
    assert code == 130
    assert shown.replace(b"\r\n", b"\n").rstrip(b"\n").endswith(b"^C"), shown


ZSHRC = """\
fpath=({functions} $fpath)
autoload -U compinit && compinit -u -d {home}/.zcompdump
# What completion offers, as zsh matched it against the word typed (then offered as usual).
compadd() {{
    local -a matched
    builtin compadd -O matched "$@"
    print -rl -- $matched >> {home}/offered
    builtin compadd "$@"
}}
# Ctrl-T: write the line as completion left it, and start a new one.
dump() {{ print -r -- "[$BUFFER]" >> {home}/lines; BUFFER= }}
zle -N dump
bindkey '^T' dump
PS1='ready> '
"""


def install_extras(destdir: Path) -> Path:
    """`make install-extras DESTDIR=destdir`; the share directory it filled (blocking)."""
    subprocess.run(["make", "-s", "install-extras", f"DESTDIR={destdir}"], cwd=ROOT,
                   check=True, timeout=300, capture_output=True)
    return destdir / "usr/local/share"


def zsh_completes(home: Path, functions: Path, sock: Path,
                  typed: list[str]) -> list[tuple[list[str], str]]:
    """For each of ``typed``, typed on a fresh line of an interactive zsh in a terminal and
    followed by <Tab>: what completion offered and the line it left (blocking).

    ``functions``: the directory put first in $fpath (where compinit finds `_virtmonctl`).
    """
    home.mkdir(parents=True)
    (home / ".zshrc").write_text(ZSHRC.format(functions=functions, home=home))
    env = {**os.environ, "ZDOTDIR": str(home), "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
           "VIRTMON_SOCKET": str(sock), "XDG_CACHE_HOME": str(home / "cache")}
    terminal = Terminal(["zsh", "-i"], env)
    results: list[tuple[list[str], str]] = []
    try:
        assert b"ready> " in terminal.read_until(lambda shown: b"ready> " in shown)
        lines, offered = home / "lines", home / "offered"
        for count, words in enumerate(typed, start=1):
            offered.write_text("")
            terminal.type(words.encode() + b"\t\x14")
            deadline = time.monotonic() + 60
            while not lines.exists() or len(lines.read_text().splitlines()) < count:
                assert time.monotonic() < deadline, terminal.shown
                time.sleep(0.05)
            line = lines.read_text().splitlines()[-1]
            results.append((offered.read_text().splitlines(), line[1:-1]))
        terminal.type(b"exit\r")
    finally:
        terminal.close()
    return results


async def test_zsh_completes_from_fpath_at_the_first_tab(daemon: Daemon, short_tmp: Path) -> None:
    """In a real zsh, the completion `make install-extras` put in zsh's site-functions
    completes at the very first <Tab>: commands, operation names, KEY= without a space after,
    flag names after a comma, domain names from the daemon."""
    share = await asyncio.to_thread(install_extras, short_tmp / "stage")
    results = await asyncio.to_thread(
        zsh_completes, short_tmp / "zsh", share / "zsh/site-functions", daemon.control_socket, [
            "virtmonctl doma",
            "virtmonctl call domain.inf",
            "virtmonctl call domain.xml dom",
            "virtmonctl call domain.xml domain=test flags=inactive,s",
            "virtmonctl suspend te",
        ])
    assert results == [
        (["domains", "domain"], "virtmonctl domain"),
        (["domain.info"], "virtmonctl call domain.info "),
        (["domain="], "virtmonctl call domain.xml domain="),
        (["flags=inactive,secure"],
         "virtmonctl call domain.xml domain=test flags=inactive,secure "),
        (["test"], "virtmonctl suspend test "),
    ]


def test_make_install_extras_puts_completion_and_pages_where_the_tools_look(
        short_tmp: Path) -> None:
    """`make install-extras` writes the bash completion virtmonctl prints, and both manual
    pages, which man renders."""
    share = install_extras(short_tmp / "stage")
    printed = subprocess.run([VIRTMONCTL, "completion", "bash"], capture_output=True,
                             check=True, timeout=60).stdout
    assert (share / "bash-completion/completions/virtmonctl").read_bytes() == printed
    for page, name in (("man1/virtmonctl.1", "VIRTMONCTL(1)"), ("man8/virtmon.8", "VIRTMON(8)")):
        shown = subprocess.run(["man", "-P", "cat", "-l", str(share / "man" / page)],
                               capture_output=True, text=True, check=True, timeout=60,
                               env={**os.environ, "MANWIDTH": "80"}).stdout
        assert shown.lstrip().startswith(name), shown[:200]
