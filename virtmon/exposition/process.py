"""The standard ``process_*`` series of the daemon and of its admin helper.

prometheus_client's process collector reads them from ``/proc`` (CPU seconds, resident and
virtual memory, open and maximum file descriptors, start time), as every exporter has them: the
daemon's unlabelled, the admin helper's in the same families with ``process="admin_helper"``.
They are rendered by prometheus_client into each cycle's exposition, after the families
of the fast renderer (see :mod:`virtmon.exposition.render`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from virtmon.exposition.family import FamilySpec

__all__ = ["FAMILIES", "HELPER_LABELS", "ProcessMetrics", "process_registry"]

_log = structlog.get_logger(component="exposition")

# The labels of the admin helper's series (the daemon's have none).
HELPER_LABELS = {"process": "admin_helper"}

_LABELS_NOTE = '`process="admin_helper"` on the admin helper\'s; none on the daemon\'s'

# The families as prometheus_client's process collector makes them (a test holds it to that),
# for the metrics reference.
FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
               labels_note=_LABELS_NOTE, unit="bytes", source="/proc/PID/stat vsize"),
    FamilySpec("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               labels_note=_LABELS_NOTE, unit="bytes", source="/proc/PID/stat rss (pages)"),
    FamilySpec("process_start_time_seconds", "gauge",
               "Start time of the process since unix epoch in seconds.",
               labels_note=_LABELS_NOTE, unit="Unix time",
               source="/proc/PID/stat starttime (clock ticks after boot) and /proc/stat btime"),
    FamilySpec("process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.",
               labels_note=_LABELS_NOTE, unit="seconds",
               source="/proc/PID/stat utime + stime (clock ticks)"),
    FamilySpec("process_open_fds", "gauge", "Number of open file descriptors.",
               labels_note=_LABELS_NOTE, unit="descriptors", source="entries of /proc/PID/fd"),
    FamilySpec("process_max_fds", "gauge", "Maximum number of open file descriptors.",
               labels_note=_LABELS_NOTE, unit="descriptors",
               source="/proc/PID/limits Max open files (soft limit)"),
)


class ProcessMetrics(Collector):
    """The daemon's process collector, with the helper's series merged into its families.

    ``helper_pid`` gives the admin helper's pid while it runs (None: no helper series).
    """

    def __init__(self, helper_pid: Callable[[], int | None] = lambda: None,
                 proc: str = "/proc") -> None:
        self._own = ProcessCollector(proc=proc, registry=None)
        self._helper_pid = helper_pid
        self._proc = proc

    def collect(self) -> Iterable[Metric]:
        """One family per ``process_*`` name, the helper's samples labelled after the daemon's.

        One family each, not two: a name may appear only once in an exposition.
        """
        try:
            return self._collect()
        except Exception:  # the process series are not worth a cycle's libvirt series
            _log.exception("virtmon.exposition.process_metrics_failed")
            return []

    def _collect(self) -> Iterable[Metric]:
        families = {family.name: family for family in self._own.collect()}
        pid = self._helper_pid()
        if pid is None:
            return families.values()
        helper = ProcessCollector(pid=lambda: pid, proc=self._proc, registry=None)
        for family in helper.collect():
            merged = families.get(family.name)
            if merged is None:  # the daemon's could not be read: the helper's still count
                merged = families[family.name] = Metric(family.name, family.documentation,
                                                        family.type)
            merged.samples.extend(sample._replace(labels={**sample.labels, **HELPER_LABELS})
                                  for sample in family.samples)
        return families.values()


def process_registry(helper_pid: Callable[[], int | None] = lambda: None) -> CollectorRegistry:
    """A registry holding only the process series (what the exposition renders with
    prometheus_client)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProcessMetrics(helper_pid))
    return registry
