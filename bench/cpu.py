"""CPU time of a tool's whole process tree to the microsecond: a cgroup of its own.

/proc/PID/stat counts in clock ticks (10 ms), so a 5 s interval costing a few milliseconds is
measured to ±5 ms over two intervals: too coarse to compare tools at a few domains. A cgroup
counts every thread and child process, exited ones included, in nanoseconds (v1 ``cpuacct``) or
microseconds (v2 ``cpu.stat``). Where neither can be created (not root, no cgroup filesystem),
:func:`cpu_group` gives None and the caller falls back to /proc.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
_names = itertools.count()


class CpuGroup:
    """A cgroup whose members' CPU time is read as one figure."""

    def __init__(self, path: Path, v2: bool) -> None:
        self.path = path
        self.v2 = v2

    def enter(self) -> None:
        """Move the calling process into the group (its children follow): a ``preexec_fn``."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self) -> float:
        """CPU time of everything that ran in the group, in seconds."""
        if self.v2:
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
            raise RuntimeError(f"no usage_usec in {self.path / 'cpu.stat'}")
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        """Remove the group (once its processes have exited)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()


def cpu_group(label: str) -> CpuGroup | None:
    """A new, empty group named after ``label``, or None where none can be made."""
    name = f"virtmon-bench-{os.getpid()}-{next(_names)}-{label}"
    v2 = (CGROUP_ROOT / "cgroup.controllers").exists()
    parent = CGROUP_ROOT if v2 else CGROUP_ROOT / "cpuacct"
    try:
        (parent / name).mkdir()
    except OSError:
        return None
    return CpuGroup(parent / name, v2)


def cpu_clock() -> str:
    """What :func:`bench.bench_peers.cpu_seconds` reads on this machine, for the results."""
    group = cpu_group("probe")
    if group is None:
        return "utime+stime from /proc/PID/stat (10 ms ticks)"
    group.remove()
    if group.v2:
        return "a cgroup per tool (cgroup v2 cpu.stat, µs)"
    return "a cgroup per tool (cgroup v1 cpuacct, ns)"
