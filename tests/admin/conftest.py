"""Shared helpers for the admin tests: the lab's libvirtd, virt-admin, the helper command."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_URI = "libvirtd:///system"
BAD_SOCKET_URI = "libvirtd:///system?socket=/nonexistent/virtmon-test/admin-sock"


def virt_admin(*args: str) -> str:
    """Run virt-admin against the lab daemon and return its output."""
    done = subprocess.run(
        ["virt-admin", "-c", ADMIN_URI, *args], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise AssertionError(f"virt-admin {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def virt_admin_table(*args: str) -> dict[str, str]:
    """`key : value` lines of a virt-admin info command as a dict."""
    pairs = (line.split(":", 1) for line in virt_admin(*args).splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def ensure_libvirtd() -> None:
    """Bring the lab up if libvirtd does not answer (other tests may restart it)."""
    for _ in range(3):
        probe = subprocess.run(
            ["virt-admin", "-c", ADMIN_URI, "srv-list"], capture_output=True, timeout=30
        )
        if probe.returncode == 0:
            return
        subprocess.run(
            [sys.executable, "-m", "tests.lab.lab", "up"], cwd=ROOT, check=False, timeout=300,
            capture_output=True,
        )
        time.sleep(1)
    raise AssertionError("the lab's libvirtd does not answer")


@pytest.fixture
def lab() -> None:
    """The lab's libvirtd is answering."""
    ensure_libvirtd()
