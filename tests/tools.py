"""The external tools the suite uses: found on PATH, or the test fails saying what to install.

`make test` installs every one of them (the Makefile's LAB_PACKAGES); a missing tool is a broken
set-up, never a reason to skip.
"""

from __future__ import annotations

import shutil

import pytest

# tool -> the Debian package that installs it
PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "systemd-analyze": "systemd",
    "systemd-socket-activate": "systemd",
    "systemd-sysusers": "systemd",
    "systemd-tmpfiles": "systemd",
    "setpriv": "util-linux",
    "saslpasswd2": "sasl2-bin",
}


def need(tool: str) -> str:
    """The tool's path; fails the test naming the package when it is not installed."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: apt-get install {PACKAGES[tool]} (make test installs "
                    "it)", pytrace=False)
    return path
