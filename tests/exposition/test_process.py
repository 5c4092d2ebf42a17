"""The process_* series of the daemon and its admin helper, rendered into the exposition."""

from __future__ import annotations

import itertools
import os
import resource
import subprocess
import time
from collections.abc import Iterator

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as _parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from structlog.testing import capture_logs

from tests.procfs import rss_approximation, status
from tests.tools import need
from virtmon.exposition.cache import Exposition
from virtmon.exposition.family import MetricFamily
from virtmon.exposition.process import FAMILIES, process_registry

PROCESS_FAMILIES = {"process_cpu_seconds", "process_virtual_memory_bytes",
                    "process_resident_memory_bytes", "process_start_time_seconds",
                    "process_open_fds", "process_max_fds"}
HELPER = (("process", "admin_helper"),)

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def helper() -> Iterator[tuple[int, float, float]]:
    """A child process standing in for the admin helper: its pid and when it was started."""
    before = time.time()
    child = subprocess.Popen(["sleep", "60"])
    after = time.time()
    try:
        # Asleep in nanosleep: the loader is done, its memory and descriptors hold still.
        deadline = time.monotonic() + 10
        while status(child.pid, "State") != "S (sleeping)":
            assert time.monotonic() < deadline, "sleep did not go to sleep"
            time.sleep(0.01)
        yield child.pid, before, after
    finally:
        child.kill()
        child.wait()


def _own_family() -> MetricFamily:
    family = MetricFamily("virtmon_build_info", "gauge", "virtmon's version.", ("version",))
    family.add(("0",), 1)
    return family


def _series(families: Iterator[object]) -> tuple[Series, dict[str, str]]:
    series: Series = {}
    types = {}
    for family in families:
        types[family.name] = family.type  # type: ignore[attr-defined]
        for sample in family.samples:  # type: ignore[attr-defined]
            series[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return series, types


def _status_kib(pid: int, field: str) -> int:
    return int(status(pid, field).split()[0])


def test_the_helpers_series_agree_with_what_the_kernel_says_of_it(
        helper: tuple[int, float, float]) -> None:
    """Each process_* family has the daemon's series and the helper's, labelled, with the
    helper's values as /proc/PID/status, its fd directory and prlimit give them."""
    pid, started_after, started_before = helper
    exposition = Exposition([_own_family()], process_registry(lambda: pid))
    series, types = _series(parse_text(exposition.text.decode()))
    assert set(types) >= PROCESS_FAMILIES
    for name in ("process_virtual_memory_bytes", "process_resident_memory_bytes",
                 "process_start_time_seconds", "process_cpu_seconds_total",
                 "process_open_fds", "process_max_fds"):
        assert (name, ()) in series and (name, HELPER) in series, name
    # sleep neither allocates nor opens anything while it sleeps: its values hold still.
    resident = series[("process_resident_memory_bytes", HELPER)]
    assert abs(resident - _status_kib(pid, "VmRSS") * 1024) <= rss_approximation()
    assert series[("process_virtual_memory_bytes", HELPER)] == _status_kib(pid, "VmSize") * 1024
    assert series[("process_open_fds", HELPER)] == len(os.listdir(f"/proc/{pid}/fd"))
    assert series[("process_max_fds", HELPER)] == resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]
    assert series[("process_max_fds", ())] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    tick = 1 / os.sysconf("SC_CLK_TCK")  # the kernel states start times in clock ticks
    assert (started_after - 1 - tick <= series[("process_start_time_seconds", HELPER)]
            <= started_before + 1)
    assert types["process_cpu_seconds"] == "counter"


def test_without_a_helper_only_the_daemons_series(helper: tuple[int, float, float]) -> None:
    """No helper pid: the process_* families carry the daemon's series alone."""
    exposition = Exposition([_own_family()], process_registry())
    series, _ = _series(parse_text(exposition.text.decode()))
    process = {key for key in series if key[0].startswith("process_")}
    assert process and all(labels == () for _, labels in process)


def test_both_formats_carry_each_family_once_with_the_same_values(
        helper: tuple[int, float, float]) -> None:
    """Text and OpenMetrics name each process family once (promtool finds nothing in the text;
    prometheus_client's strict OpenMetrics parser accepts the other) with equal values."""
    # A pid that changes at every reading (the helper's, then this process's): the two formats
    # agree only if the process series are read once for both.
    pids = itertools.cycle((helper[0], os.getpid()))
    exposition = Exposition([_own_family()], process_registry(lambda: next(pids)))
    text, openmetrics = exposition.text.decode(), exposition.openmetrics.decode()
    for name in PROCESS_FAMILIES:  # text names a counter by its sample name
        text_name = name + "_total" if name == "process_cpu_seconds" else name
        assert text.count(f"# TYPE {text_name} ") == 1, name
        assert openmetrics.count(f"# TYPE {name} ") == 1, name
    assert openmetrics.endswith("\n# EOF\n") and openmetrics.count("# EOF") == 1
    result = subprocess.run([need("promtool"), "check", "metrics"], input=exposition.text,
                            capture_output=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    text_series, _ = _series(parse_text(text))
    om_series, _ = _series(_parse_openmetrics(openmetrics))  # type: ignore[no-untyped-call]
    assert om_series == text_series


def test_the_declared_process_families_are_the_ones_prometheus_client_makes() -> None:
    """The process families docs/metrics.md lists (their declarations) have the names, types and
    HELP of what prometheus_client's process collector makes, in its order."""
    made = [(family.samples[0].name, family.type, family.documentation)
            for family in process_registry().collect()]
    assert made == [(spec.name, spec.type, spec.help) for spec in FAMILIES]


def test_a_failing_process_reading_costs_only_the_process_series() -> None:
    """When reading the process series fails, the exposition still carries the other families
    (the failure is logged), in both formats."""
    def broken() -> int:
        raise RuntimeError("no pid")

    with capture_logs() as logs:
        exposition = Exposition([_own_family()], process_registry(broken))
        text, openmetrics = exposition.text, exposition.openmetrics  # rendered when asked for
    assert b'virtmon_build_info{version="0"} 1' in text
    assert b"process_" not in text + openmetrics
    assert openmetrics.endswith(b"# EOF\n")
    assert any(log["event"] == "virtmon.exposition.process_metrics_failed" for log in logs)


@pytest.mark.parametrize("name", ["process_open_fds", "process_cpu_seconds_total"])
def test_a_family_named_like_a_process_series_is_dropped_not_doubled(name: str) -> None:
    """A family of ours with a process series' name is left out (logged), so each name stays
    one family in both formats and promtool finds nothing."""
    clash = MetricFamily(name, "gauge", "Ours.")
    clash.add((), 7)
    with capture_logs() as logs:
        exposition = Exposition([_own_family(), clash], process_registry())
        assert b"Ours." not in exposition.text + exposition.openmetrics
    assert any(log["event"] == "virtmon.exposition.family_clash" for log in logs)
    result = subprocess.run([need("promtool"), "check", "metrics"], input=exposition.text,
                            capture_output=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    parsed = _parse_openmetrics(exposition.openmetrics.decode())  # type: ignore[no-untyped-call]
    expected = {"virtmon_build_info", *PROCESS_FAMILIES}
    assert sorted(family.name for family in parsed) == sorted(expected)
