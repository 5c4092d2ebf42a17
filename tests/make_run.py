"""`make run` driven as a newcomer would: its own port and run directory, Ctrl-C to stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANNER_END = "Ctrl-C stops virtmon."


def venv_free_path() -> str:
    """$PATH without the virtual environment, as a newcomer's shell has it."""
    venv_bin = Path(sys.executable).parent.resolve()
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != venv_bin)


# What an outer make (`make test` runs the suite) hands its children: a make started with them
# prints "Entering directory" lines and takes the outer one's flags, as no newcomer's shell does.
OUTER_MAKE = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def newcomer_env() -> dict[str, str]:
    """The environment of a newcomer's shell: no virtual environment on $PATH, no outer make."""
    env = {key: value for key, value in os.environ.items() if key not in OUTER_MAKE}
    return {**env, "PATH": venv_free_path()}


def make_run(rundir: Path, port: int, *variables: str) -> subprocess.Popen[str]:
    """`make -s run` with its own port and run directory, from a newcomer's shell."""
    return subprocess.Popen(
        ["make", "-s", "run", f"LISTEN=127.0.0.1:{port}", f"RUNDIR={rundir}", *variables],
        cwd=ROOT, start_new_session=True, text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=newcomer_env())


def read_until_banner(process: subprocess.Popen[str], timeout: float = 120.0) -> list[str]:
    """stderr's lines up to and including the banner's last; after ``timeout`` the run is
    killed (and this fails)."""
    assert process.stderr is not None
    watchdog = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    lines: list[str] = []
    try:
        while not lines or lines[-1] != BANNER_END:
            line = process.stderr.readline()
            assert line, f"make run ended before its banner: {lines}"
            lines.append(line.rstrip("\n"))
    finally:
        watchdog.cancel()
    return lines


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C to make run's process group; what it printed after."""
    os.killpg(process.pid, signal.SIGINT)
    return process.communicate(timeout=60)
