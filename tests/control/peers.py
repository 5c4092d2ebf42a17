"""Callers of the control socket with uids of their own: throwaway ids and a probe run as them.

The daemon learns a caller's uid from the socket (SO_PEERCRED), so a role test needs a real
process with that uid: :func:`probe` runs tests/control/role_probe.py under ``setpriv``.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def unused_ids(count: int) -> list[int]:
    """Ids that neither the user nor the group database knows (no host's users assumed)."""
    users = {u.pw_uid for u in pwd.getpwall()}
    groups = {g.gr_gid for g in grp.getgrall()}
    free = [n for n in range(61000, 65000) if n not in users and n not in groups]
    assert len(free) >= count, "no unused ids between 61000 and 65000"
    return free[:count]


def probe(sock: Path, uid: int, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answers to ``requests`` (see role_probe) made over the socket by ``uid``, whose
    primary group is the same number and who has no other group, in order."""
    proc = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
         sys.executable, "-m", "tests.control.role_probe", str(sock)],
        input=json.dumps(requests), capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}, check=False)
    assert proc.returncode == 0, proc.stderr
    answers: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(answers) == len(requests)
    return answers
