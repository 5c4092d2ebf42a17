"""The first start: `make run` as a newcomer meets it, and what any daemon shows first."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import daemon_config, running_daemon
from tests.daemon import free_port
from tests.make_run import make_run, newcomer_env, read_until_banner, stop
from tests.terminal import Terminal
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
URI = "test:///default"


def scrape(address: str) -> str:
    """The body of ``address``/metrics (blocking)."""
    with urllib.request.urlopen(f"{address}/metrics", timeout=10) as response:
        return str(response.read().decode())


async def test_the_first_cycle_has_every_domains_facts(short_tmp: Path) -> None:
    """The first scrape after start-up (a long interval: no second cycle yet) has the stock test
    domain's info labels filled, not empty until the next cycle, and no incomplete stats."""
    cfg = daemon_config(short_tmp, libvirt={"uri": URI}, collect={"interval": 3600.0})
    async with running_daemon(cfg) as daemon:
        body = await asyncio.to_thread(scrape, daemon.metrics_address)
        assert daemon.scheduler.stats.cycles == 1
    info = re.search(r'^libvirt_domain_info\{domain="test",[^}]*\}', body, re.M)
    assert info is not None, body
    assert 'os_type="hvm",persistent="true",autostart="false"' in info.group(0)
    assert re.search(r'^libvirt_domain_stats_incomplete\{domain="test"\} 0$', body, re.M)


async def test_the_demo_raises_no_alert_in_its_first_cycles(short_tmp: Path) -> None:
    """A demo daemon on the test driver, five cycles in (DomainStatsIncomplete needs three):
    no alert at all, for the stock test domain or the demo's running ones."""
    cfg = daemon_config(short_tmp, libvirt={"uri": URI}, collect={"interval": 0.5})
    async with running_daemon(cfg, demo=True) as daemon:
        await wait_until(lambda: daemon.scheduler.stats.cycles >= 5, 60)
        active = list(daemon.alerts.engine.active.values())
    assert active == [], active


def test_make_run_starts_calmly_with_a_banner_last(short_tmp: Path) -> None:
    """`make run`: no warning, every log line a record of the configured format (none of the
    default format, no debug), the banner with a copy-paste export and a first command last,
    and the state of an earlier run gone."""
    (short_tmp / "state").mkdir()
    (short_tmp / "state" / "left-by-an-earlier-run").touch()
    process = make_run(short_tmp, free_port())
    try:
        lines = read_until_banner(process)
        assert not (short_tmp / "state" / "left-by-an-earlier-run").exists()
    finally:
        out, err = stop(process)
    banner = lines[-5:]
    assert banner == [
        "In another shell:",
        f"  export VIRTMON_SOCKET={short_tmp}/virtmon.sock",
        "  .venv/bin/virtmonctl events -n 5 --follow",
        "Writes are off: make run ALLOW_WRITE=1 turns them on.",
        "Ctrl-C stops virtmon.",
    ]
    assert re.fullmatch(r"virtmon \S+: metrics at \S+, control socket at \S+", lines[-6])
    records = [json.loads(line) for line in lines[:-6]]  # off a terminal: JSON
    assert [r["event"] for r in records if r["level"] not in ("info",)] == [], records
    assert records[-1]["event"] == "virtmon.started"
    assert out == "", out  # nothing on stdout, where structlog's unconfigured loggers print
    assert '"virtmon.stopped"' in err and "Traceback" not in err  # Ctrl-C: a clean stop


def test_a_second_make_run_on_the_same_run_directory_leaves_the_first_alone(
        short_tmp: Path) -> None:
    """A second `make run` on the run directory of one that runs (another port): refused with
    the way out, before it empties the first one's state, which goes on answering."""
    first = make_run(short_tmp, free_port())
    try:
        read_until_banner(first)
        journal = short_tmp / "state" / "virtmon.db"
        assert journal.exists()
        second = make_run(short_tmp, free_port())
        _out, err = second.communicate(timeout=120)
        assert second.returncode != 0
        assert (f"make run: a virtmon already runs on {short_tmp}/virtmon.sock: stop it first, "
                "or give this one a RUNDIR=DIR and LISTEN=HOST:PORT of its own") in err
        assert journal.exists()
        assert first.poll() is None
    finally:
        stop(first)


def test_a_taken_port_is_named_with_make_runs_way_out_before_libvirt(short_tmp: Path) -> None:
    """`make run` on a port something listens on: exit code 69 (make says so), one line naming
    the address and `make run LISTEN=`, and no record of a libvirt connection."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = make_run(short_tmp, port)
        _out, err = process.communicate(timeout=120)
    assert process.returncode != 0
    assert (f"virtmon: cannot start: the metrics address 127.0.0.1:{port} is in use (another "
            f"virtmon?); choose another with make run LISTEN=127.0.0.1:{port + 1} (virtmon run "
            f"--listen 127.0.0.1:{port + 1})") in err.splitlines()
    assert "Error 69" in err
    assert "virtmon.connection" not in err


def test_a_taken_port_outside_the_demo_names_the_flag_and_the_key(short_tmp: Path) -> None:
    """`virtmon run` (no demo) on a taken port: exit 69 with --listen and metrics.listen."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "virtmon.cli", "run", "--uri", URI, "--listen",
             f"127.0.0.1:{port}", "--control-socket", str(short_tmp / "c.sock"),
             "--state-dir", str(short_tmp / "state"), "--no-collector.admin"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 69
    assert proc.stderr.splitlines()[-1] == (
        f"virtmon: cannot start: the metrics address 127.0.0.1:{port} is in use (another "
        f"virtmon?); choose another with --listen HOST:PORT or metrics.listen, e.g. "
        f"127.0.0.1:{port + 1}")
    assert "virtmon.connection" not in proc.stderr


def test_on_a_terminal_virtmon_run_prints_the_first_steps_and_stops_on_ctrl_c(
        short_tmp: Path) -> None:
    """`virtmon run` (no demo) on a terminal: log lines for people, then what to type in another
    shell (no word of make run's writes); Ctrl-C typed there stops it with exit 0."""
    virtmon = str(Path(sys.executable).parent / "virtmon")
    terminal = Terminal(
        [virtmon, "run", "--uri", URI, "--listen", f"127.0.0.1:{free_port()}",
         "--control-socket", str(short_tmp / "c.sock"), "--state-dir", str(short_tmp / "state"),
         "--no-collector.admin"], newcomer_env(), columns=160)
    try:
        shown = terminal.read_until(lambda shown: b"Ctrl-C stops virtmon." in shown, 60)
        lines = shown.decode().replace("\r\n", "\n").splitlines()
        assert lines[-4:] == [
            "In another shell:",
            f"  export VIRTMON_SOCKET={short_tmp}/c.sock",
            f"  {os.path.relpath(Path(virtmon).parent / 'virtmonctl', ROOT)} events -n 5 --follow",
            "Ctrl-C stops virtmon.",
        ]
        assert "[info     ] virtmon.started" in lines[-6]  # console format on a terminal
        terminal.type(b"\x03")
        terminal.read_until(lambda shown: False)
    finally:
        code = terminal.close()
    assert code == 0
