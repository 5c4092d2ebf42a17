"""The second host: one booted Debian 12 container (libvirt 11.3, QEMU 10) for the whole run,
removed afterwards.

The files run in name order on it: libvirt 11 (test_libvirt11), the package (test_package), the
service (test_service), and last removing and purging the package (test_uninstall)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host2.machine import (
    LAB,
    Booted,
    build_builder,
    build_image,
    build_seconds,
    exclusive,
    prune_images,
    remove_tree,
    second_host,
    sweep_stale_runs,
)

# Said at the end of the run: how long the second host took to come up.
TIMINGS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The image's build time (when it was built) and the boot time, below the results."""
    for line in TIMINGS:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def host2() -> Iterator[Booted]:
    """virtmon installed from its Debian package with apt, and the container booted again."""
    with exclusive():
        sweep_stale_runs()
        image = build_image()
        builder = build_builder(image)
        prune_images({image, builder})
        TIMINGS.append(f"second host: image {image.name}, built in {build_seconds(image):.0f} s;"
                       f" builder in {build_seconds(builder):.0f} s")
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=LAB))
        try:
            with second_host(workdir, image, builder) as host:
                TIMINGS.append(f"second host: booted in {host.boot_seconds:.1f} s (boot of "
                               "systemd and its units, virtmon's READY=1 included)")
                # An operator in group virtmon, and a user who is not.
                host.run("useradd --no-create-home --groups virtmon member"
                         " && useradd --no-create-home outsider")
                yield host
        finally:
            remove_tree(workdir)
