"""The second host: one booted Debian 12 container for the whole run, removed afterwards."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host2.machine import (
    LAB,
    Booted,
    exclusive,
    remove_tree,
    second_host,
    sweep_stale_runs,
)


@pytest.fixture(scope="session")
def host2() -> Iterator[Booted]:
    """virtmon installed as docs/install.md says, enabled, and the container booted."""
    with exclusive():
        sweep_stale_runs()
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=LAB))
        try:
            with second_host(workdir) as host:
                print(f"\nsecond host booted in {host.boot_seconds:.1f} s")
                # An operator in group virtmon, and a user who is not.
                host.run("useradd --no-create-home --groups virtmon member"
                         " && useradd --no-create-home outsider")
                yield host
        finally:
            remove_tree(workdir)
