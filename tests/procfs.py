"""Processes as the kernel describes them, for the tests of the process_* series (and the
benchmarks' process trees)."""

from __future__ import annotations

import os
from pathlib import Path


def status(pid: int, field: str) -> str:
    """A field of /proc/PID/status (the kernel's own summary, not the stat fields)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.partition(":")[2].strip()
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def child_pids(parent: int) -> list[int]:
    """The direct children of a process (from /proc/*/stat)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command may contain spaces and parentheses: fields start after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(entry.name))
    return children


# Resident pages are the sum of three of the mm's counters: file, anonymous and shared memory
# pages (include/linux/mm.h, get_mm_rss).
RSS_COUNTERS = 3


def rss_approximation() -> int:
    """How far /proc/PID/stat's resident pages (what the process collector reads) may be from
    /proc/PID/status's VmRSS: Linux keeps each of the counters RSS sums in per-CPU counters,
    which stat reads without summing, each CPU's share off by at most percpu_counter_batch,
    max(32, 2 * CPUs) pages (lib/percpu_counter.c). Seen: 72 pages apart with 2 CPUs, more
    than one counter's 64."""
    cpus = os.cpu_count() or 1
    return RSS_COUNTERS * max(32, 2 * cpus) * cpus * os.sysconf("SC_PAGE_SIZE")
