"""virtmon as its package installs it: the checkout and its runtime dependencies only.

The virtualenv of a checkout also holds the test extras, and some runtime dependencies load
whatever optional package they find (structlog loads ``rich``, which a test dependency installs,
for console tracebacks: 4-5 MiB). :func:`runtime_view` is a directory of links to the runtime
dependencies alone, as the Debian package's virtualenv holds them (packaging/deb/build); a
Python started with :func:`runtime_command` sees that and the checkout, nothing else, and holds
in memory what an installed daemon holds.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def runtime_distributions() -> dict[str, metadata.Distribution]:
    """virtmon's runtime requirements and theirs, transitively, without extras, by name."""
    found: dict[str, metadata.Distribution] = {}
    todo = [Requirement(text) for text in metadata.distribution("virtmon").requires or ()]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker is not None
                             and not requirement.marker.evaluate({"extra": ""})):
            continue
        found[name] = metadata.distribution(name)
        todo += [Requirement(text) for text in found[name].requires or ()]
    return found


def runtime_view(directory: Path) -> Path:
    """``directory`` filled with links to what the runtime distributions installed (their
    packages, modules, extensions and metadata, and the bytecode of the modules that are single
    files: the package's is compiled when it is installed, and compiling libvirt.py at each
    start would cost the daemon memory an installed one does not spend); ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for dist in runtime_distributions().values():
        site = Path(str(dist.locate_file("")))
        tops = {Path(str(file)).parts[0] for file in dist.files or ()}
        for top in tops - {".."}:
            link = directory / top
            if (site / top).exists() and not link.exists():
                link.symlink_to(site / top)
    return directory


def runtime_command(view: Path, *args: str,
                    checkout: Path = ROOT) -> tuple[list[str], dict[str, str]]:
    """(command, environment additions) for this Python with virtmon from ``checkout`` and
    ``view`` as its only packages: ``-S`` leaves out the virtualenv's site-packages."""
    return [sys.executable, "-S", *args], {"PYTHONPATH": f"{checkout}:{view}"}
