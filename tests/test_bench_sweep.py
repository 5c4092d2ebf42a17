"""The sweep's parts: medians and noisy marking, results → plot series and table, the kept
section of docs/PERFORMANCE.md, the KVM sizes that fit, a tool given up after a timeout, and the
Python floor serving what libvirt's test driver holds."""

from __future__ import annotations

import argparse
import gzip
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench import bench_sweep
from bench.bench_peers import Tool
from bench.bench_sweep import cycle_seconds, python_floor_command, settle_seconds
from bench.sweep_plots import (
    BEGIN,
    END,
    Figure,
    cell,
    figure_of,
    kept_section,
    kvm_sizes_that_fit,
    series,
    summarize,
    table,
    timeouts,
    with_section,
)
from tests.daemon import free_port


def point(tool: str, domains: int, repeat: int, scenario: str = "test",
          status: str = "ok", **figures: Any) -> dict[str, Any]:
    """One recorded point as bench_sweep writes it."""
    return {"scenario": scenario, "tool": tool, "domains": domains, "repeat": repeat,
            "status": status, **figures}


def test_a_point_is_the_median_of_its_repeats() -> None:
    """The figure of three repeats is their median, not their mean."""
    got = figure_of([1.0, 9.0, 2.0])
    assert got is not None
    assert got.median == 2.0
    assert got.values == (1.0, 9.0, 2.0)


def test_repeats_that_spread_widely_are_noisy_and_close_ones_are_not() -> None:
    """A spread over half the median marks the point noisy; one within it, or a single value,
    does not."""
    assert Figure(11.0, (10.0, 11.0, 30.0)).noisy
    assert not Figure(11.0, (10.0, 11.0, 12.0)).noisy
    assert not Figure(11.0, (11.0,)).noisy
    assert Figure(0.0, (0.0, 0.0, 5.0)).noisy
    assert not Figure(0.0, (0.0, 0.0, 0.0)).noisy


def test_timeouts_and_errors_are_counted_and_left_out_of_the_medians() -> None:
    """Only repeats that measured count towards the median; timeouts and errors are tallied."""
    summary = summarize([
        point("libvirt_exporter", 10000, 0, scrape_p50_ms=9000.0),
        point("libvirt_exporter", 10000, 1, status="timeout", timeout_s=240),
        point("libvirt_exporter", 10000, 2, status="error", error="boom"),
    ])
    assert len(summary) == 1
    only = summary[0]
    assert (only.repeats, only.timeouts, only.errors) == (3, 1, ("boom",))
    assert only.figures["scrape_p50_ms"].values == (9000.0,)
    assert "scrape_p99_ms" not in only.figures


def test_series_give_each_tool_its_medians_by_size_with_the_noisy_mark() -> None:
    """One line per tool (virtmon first, the bare call last), sorted by the number of domains,
    without the points that lack the figure or belong to the other scenario."""
    points = [
        point("bare", 1000, 0, cycle_ms=6.0),
        point("virtmon", 1000, 0, cycle_ms=30.0),
        point("virtmon", 1000, 1, cycle_ms=90.0),
        point("virtmon", 1000, 2, cycle_ms=32.0),
        point("virtmon", 10, 0, cycle_ms=8.0),
        point("collectd", 10, 0, cycle_ms=None),
        point("virtmon", 5, 0, scenario="kvm", cycle_ms=50.0),
    ]
    lines = series(summarize(points), "test", "cycle_ms")
    assert list(lines) == ["virtmon", "bare"]
    assert lines["virtmon"] == [(10, 8.0, False), (1000, 32.0, True)]
    assert lines["bare"] == [(1000, 6.0, False)]
    assert series(summarize(points), "kvm", "cycle_ms") == {"virtmon": [(5, 50.0, False)]}


def test_the_table_says_timeout_where_no_repeat_measured() -> None:
    """A point that only timed out shows as a timeout, a noisy one with its range."""
    summary = summarize([
        point("libvirt_exporter", 10000, 0, status="timeout"),
        point("virtmon", 10000, 0, scrape_p50_ms=1.0),
        point("virtmon", 10000, 1, scrape_p50_ms=4.0),
        point("virtmon", 10000, 2, scrape_p50_ms=1.2),
    ])
    by_tool = {p.tool: p for p in summary}
    assert cell(by_tool["libvirt_exporter"], "scrape_p50_ms") == "timeout (1/1)"
    assert cell(by_tool["virtmon"], "scrape_p50_ms") == "1.20* (1 to 4)"
    rendered = table(summary, "test")
    assert "| 10,000 | scrape p50 (ms) | 1.20* (1 to 4) | timeout (1/1) |" in rendered


def test_a_tool_skipped_after_a_timeout_is_said_so_and_not_counted_as_run() -> None:
    """Repeats skipped after a timeout are "not run", a timeout's count is of the repeats run,
    and the plot's timeout marks name both sizes."""
    summary = summarize([
        point("libvirt_exporter", 1000, 0, status="timeout"),
        point("libvirt_exporter", 1000, 1, status="skipped", timed_out_at=1000),
        point("libvirt_exporter", 5000, 0, status="skipped", timed_out_at=1000),
    ])
    by_size = {p.domains: p for p in summary}
    assert cell(by_size[1000], "scrape_p50_ms") == "timeout (1/1)"
    assert cell(by_size[5000], "scrape_p50_ms") == "not run (timed out before)"
    assert timeouts(summary, "test") == {"libvirt_exporter": [1000, 5000]}


async def test_a_tool_that_times_out_is_not_run_again_in_that_scenario(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A tool that never gets ready times out in its first repeat; its second repeat, and the
    next size, are recorded as skipped without starting it; another scenario still runs it."""
    started: list[int] = []

    def never_ready(_tmp: Path, port: int, _interval: float, _uri: str) -> list[str]:
        started.append(port)
        return ["sleep", "30"]

    monkeypatch.setattr(bench_sweep, "SWEEP_TOOLS", (Tool("slow", "slow", never_ready, "sleep",
                                                          False),))
    args = argparse.Namespace(repeat=2, bare_calls=1, only=[], point_timeout=1.0, interval=5.0)
    record = bench_sweep.Recorder(tmp_path / "sweep.json", {})
    timed_out: dict[tuple[str, str], int] = {}
    for size in (10, 100):
        await bench_sweep.measure_point("test", size, "test:///default", ["test"], args, record,
                                        timed_out)
    await bench_sweep.measure_point("kvm", 1, "test:///default", ["test"], args, record,
                                    timed_out)
    slow = [(p["scenario"], p["domains"], p["status"]) for p in record.data["points"]
            if p["tool"] == "slow"]
    assert slow == [("test", 10, "timeout"), ("test", 10, "skipped"), ("test", 100, "skipped"),
                    ("test", 100, "skipped"), ("kvm", 1, "timeout"), ("kvm", 1, "skipped")]
    assert len(started) == 2
    assert timed_out == {("test", "slow"): 10, ("kvm", "slow"): 1}


def test_the_python_floor_serves_every_test_domains_values_gzipped(tmp_path: Path) -> None:
    """bench/python_floor.py on libvirt's test driver answers GET /metrics with a gzipped body
    holding the test domain's statistics under its name and ending in # EOF."""
    port = free_port()
    command = python_floor_command(tmp_path, port, 5.0, "test:///default")
    with subprocess.Popen(command, stderr=subprocess.PIPE) as proc:
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as answer:
                        encoding, body = answer.headers["Content-Encoding"], answer.read()
                    break
                except OSError:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    assert time.monotonic() < deadline, "the floor did not answer in 30 s"
                    time.sleep(0.1)
        finally:
            proc.terminate()
    text = gzip.decompress(body).decode()
    assert encoding == "gzip"
    assert 'floor_state_state{domain="test"} 1' in text  # the test domain runs
    assert text.endswith("# EOF\n")


def test_the_sweep_section_is_replaced_in_place_and_appended_when_missing() -> None:
    """Rewriting the section keeps the text around it; a document without one gets it at the
    end; kept_section finds it again."""
    new = f"{BEGIN}\nnew curves\n{END}"
    before = f"# Performance\n\n{BEGIN}\nold curves\n{END}\n\n## After\n"
    assert with_section(before, new) == f"# Performance\n\n{new}\n\n## After\n"
    assert with_section("# Performance\n", new) == f"# Performance\n\n{new}\n"
    assert kept_section(with_section("# Performance\n", new)) == new
    assert kept_section("# Performance\n") == ""


def test_the_document_regenerated_by_python_m_bench_keeps_the_sweep_section() -> None:
    """bench.__main__.document ends with the section it was given, unchanged."""
    from bench.__main__ import document

    info = {key: "?" for key in ("date", "uname", "cores", "cpu", "memory_gib",
                                 "libvirt_library", "libvirtd", "python",
                                 "load_average_before")}
    section = f"{BEGIN}\ncurves\n{END}"
    assert kept_section(document(info, [], {}, section)) == section


def test_only_the_kvm_sizes_whose_domains_fit_in_memory_are_run() -> None:
    """Sizes are kept, smallest first, while their domains fit beside the reserve."""
    assert kvm_sizes_that_fit([20, 1, 10, 5], 4096 + 10 * 96) == [1, 5, 10]
    assert kvm_sizes_that_fit([1, 5], 1000) == []


def test_virtmons_cycle_time_is_read_from_its_own_exposition() -> None:
    """The collection duration sample, not the family's HELP or TYPE lines."""
    body = (b"# HELP virtmon_collection_duration_seconds Wall time.\n"
            b"# TYPE virtmon_collection_duration_seconds gauge\n"
            b"virtmon_collection_duration_seconds 0.0421\n")
    assert cycle_seconds(body) == 0.0421
    assert cycle_seconds(b"other 1\n") is None


def test_the_cpu_window_waits_longer_for_more_domains() -> None:
    """An interval, plus a millisecond per domain (the start-up resync reads each one)."""
    assert settle_seconds(5.0, 0) == 5.0
    assert settle_seconds(5.0, 10000) == 15.0
