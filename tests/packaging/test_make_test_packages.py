"""`make test` installs every tool the suite needs (tests/tools.py names each one's package)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.tools import PACKAGES

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def make_variable(name: str, text: str) -> set[str]:
    """The words of a Makefile variable, its continuation lines and $(OTHER) variables expanded."""
    joined = text.replace("\\\n", " ")
    match = re.search(rf"^{name}\s*:?=(.*)$", joined, flags=re.M)
    assert match, f"no {name} in the Makefile"
    words: set[str] = set()
    for word in match.group(1).split():
        inner = re.fullmatch(r"\$\((\w+)\)", word)
        words |= make_variable(inner.group(1), text) if inner else {word}
    return words


def essential(package: str) -> bool:
    """Debian installs the package on every system (Essential: yes)."""
    answer = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", package],
                            capture_output=True, text=True)
    return answer.stdout.strip() == "yes"


def test_every_tool_package_is_installed_by_make_test() -> None:
    """Each package tests/tools.py sends a user to is in LAB_PACKAGES, or essential."""
    installed = make_variable("LAB_PACKAGES", MAKEFILE.read_text())
    assert {"libvirt-dev", "qemu-utils"} <= installed  # the parsing works
    missing = {package for package in PACKAGES.values()
               if package not in installed and not essential(package)}
    assert missing == set(), f"make test does not install {sorted(missing)}"
