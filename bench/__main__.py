"""``python -m bench``: every benchmark against the lab, one table, results.json, PERFORMANCE.md.

The lab must be up (``make bench`` brings it up). Each scenario runs in a subprocess of its own;
the whole run takes about three minutes. Writes bench/results/results.json (git-ignored) and
regenerates docs/PERFORMANCE.md with the machine, the date, the table and the notes.

    .venv/bin/python -m bench [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import RESULTS_DIR, ROOT, run_scenario

DOC = ROOT / "docs" / "PERFORMANCE.md"


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, its value, and its target if it has one."""

    area: str
    figure: str
    value: str
    target: str = ""
    met: bool | None = None

    @property
    def status(self) -> str:
        """met / MISSED / blank (no target)."""
        return "" if self.met is None else ("met" if self.met else "MISSED")


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    import libvirt

    def version(number: int) -> str:
        return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"

    try:
        cpu_model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu_model = platform.processor()
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines()
        if line.startswith("MemTotal")
    )
    daemon = subprocess.run(["libvirtd", "--version"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return {
        "uname": " ".join(platform.uname()),
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "libvirt_library": version(libvirt.getVersion()),
        "libvirtd": daemon,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_all(quick: bool) -> dict[str, Any]:
    """Run every scenario; the raw results by name."""
    scale = 0.5 if quick else 1.0
    repeat = "10" if quick else "20"
    plan: list[tuple[str, str, list[str], float]] = [
        ("events_paced", "bench.bench_events",
         ["--rate", "2500", "--seconds", str(10 * scale)], 120),
        ("events_unpaced", "bench.bench_events",
         ["--rate", "0", "--seconds", str(8 * scale), "--settle", "5"], 120),
        ("cycle_kvm", "bench.bench_cycle", ["--scenario", "kvm", "--domains", "10",
                                            "--repeat", repeat], 300),
        ("cycle_test_1000", "bench.bench_cycle", ["--domains", "1000", "--repeat", repeat], 300),
        ("cycle_test_5000", "bench.bench_cycle", ["--domains", "5000", "--repeat", "10"], 300),
        ("scrape_1000", "bench.bench_scrape", ["--domains", "1000",
                                               "--requests", "400" if quick else "800"], 300),
        ("scrape_5000", "bench.bench_scrape", ["--domains", "5000", "--requests", "400"], 300),
    ]
    results: dict[str, Any] = {}
    for name, module, args, timeout in plan:
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            results[name] = run_scenario(module, args, timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            results[name] = {"error": str(exc)[-2000:]}
        results[name]["wall_s"] = round(time.monotonic() - started, 1)
    print("bench: render ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_render.py"), "--repeat", "5"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    results["render"] = json.loads((RESULTS_DIR / "render.json").read_text(encoding="utf-8"))
    return results


def rows(results: dict[str, Any]) -> list[Row]:
    """The table, with each figure checked against its target."""
    out: list[Row] = []

    def add(area: str, figure: str, value: str, target: str = "",
            met: Callable[[], bool] | None = None) -> None:
        out.append(Row(area, figure, value, target, met() if met else None))

    def ok(name: str) -> dict[str, Any] | None:
        data = results.get(name) or {}
        if "error" in data:
            add(name, "failed", data["error"].splitlines()[-1][:80] if data["error"] else "?")
            return None
        return data

    if (paced := ok("events_paced")) is not None:
        add("events", f"sustained events/s (generator paced at {paced['rate']:.0f}/s)",
            f"{paced['events_per_second']:,.0f}", "≥ 2,000",
            lambda: paced["events_per_second"] >= 2000)
        add("events", "events lost", f"{paced['lost']} of {paced['expected']:,}", "0",
            lambda: paced["lost"] == 0)
        add("events", "latency callback → subscriber p50",
            f"{paced['latency_p50_ms']:.1f} ms")
        add("events", "latency callback → subscriber p99", f"{paced['latency_p99_ms']:.1f} ms",
            "< 10 ms", lambda: paced["latency_p99_ms"] < 10)
        add("events", "loop lag p99 during the event storm", f"{paced['loop_lag_p99_ms']:.1f} ms")
        add("events", "daemon CPU per 1,000 events",
            f"{paced['daemon_cpu_s'] / max(1, paced['received']) * 1000:.2f} s")
    if (free := ok("events_unpaced")) is not None:
        cut = "cut off as too slow" if free["stream_notices"] else "kept up"
        add("events", "unpaced generator: generated / delivered events/s",
            f"{free['generated_per_second']:,.0f} / {free['events_per_second']:,.0f} ({cut})")
    if (c1k := ok("cycle_test_1000")) is not None:
        add("events", "loop lag p99 while 1,000-domain cycles run",
            f"{c1k['loop_lag_p99_ms']:.1f} ms", "< 20 ms",
            lambda: c1k["loop_lag_p99_ms"] < 20)
    for name, label in (("cycle_kvm", "KVM"), ("cycle_test_1000", "test 1,000"),
                        ("cycle_test_5000", "test 5,000")):
        data = ok(name)
        if data is None:
            continue
        area = f"cycle {label} ({data['domains']} domains)"
        add(area, "floor: bare getAllDomainStats median", f"{data['floor_median_ms']:.1f} ms")
        add(area, "virtmon cycle median", f"{data['cycle_median_ms']:.1f} ms")
        if name == "cycle_kvm":
            add(area, "ratio cycle / floor", f"{data['ratio']:.2f}", "≤ 1.2",
                lambda data=data: data["ratio"] <= 1.2)  # type: ignore[misc]
        else:
            add(area, "ratio cycle / floor", f"{data['ratio']:.2f}")
        add(area, "CPU per cycle (process)", f"{data['cycle_cpu_median_s'] * 1e3:.1f} ms")
        add(area, "samples exported", f"{data['samples']:,}")
        add(area, "RSS (peak)", f"{data['rss_mib']:.0f} MiB ({data['rss_peak_mib']:.0f})")
    for name in ("scrape_1000", "scrape_5000"):
        data = ok(name)
        if data is None:
            continue
        area = f"scrape {data['domains']:,} domains"
        for phase, text in (("idle", "no cycle running"), ("cycling", "cycle every 1 s")):
            for conc in (1, 16):
                run = data[f"{phase}_c{conc}"]
                target = "≤ 5 ms" if data["domains"] == 1000 else ""
                add(area, f"p50 / p99, {conc} scraper{'s' if conc > 1 else ''}, {text}",
                    f"{run['p50_ms']:.2f} / {run['p99_ms']:.2f} ms", target,
                    (lambda run=run: run["p99_ms"] <= 5) if target else None)  # type: ignore[misc]
    render = results.get("render") or {}
    if render:
        add("render", f"render_text µs/sample ({render['samples']:,} samples)",
            f"{render['render_text']['us_per_sample_median']:.2f}", "≤ 1.5",
            lambda: render["render_text"]["us_per_sample_median"] <= 1.5)
        add("render", "collect + render µs/sample",
            f"{render['collect_and_render_text']['us_per_sample_median']:.2f}")
        add("render", "prometheus_client generate_latest µs/sample",
            f"{render['prometheus_client_generate_latest']['us_per_sample_median']:.2f}")
    return out


def table(lines: list[Row], markdown: bool) -> str:
    """The table as Markdown or as plain text."""
    if markdown:
        text = ["| area | figure | value | target | |", "|---|---|---|---|---|"]
        text += [f"| {r.area} | {r.figure} | {r.value} | {r.target} | {r.status} |"
                 for r in lines]
        return "\n".join(text)
    widths = [max(len(getattr(r, f)) for r in lines) for f in ("area", "figure", "value")]
    return "\n".join(
        f"{r.area:{widths[0]}}  {r.figure:{widths[1]}}  {r.value:>{widths[2]}}  "
        f"{r.target:8}  {r.status}" for r in lines
    )


NOTES = """\
## Why the misses (analysis of the profile taken on this lab)

- **Event latency p99.** The median is a few ms; the tail comes from the hops every event makes
  on 2 cores shared with libvirtd and the generator: libvirt's event timer is marshalled onto the
  loop, the bus journals each batch in a worker thread (SQLite commit), and the stream handler
  writes every event with its own `response.write` (one socket write each). A py-spy profile at
  2,500 events/s shows the loop ~75 % busy: the stream handler's per-event writes (~17 %), the
  cross-thread wake-ups (`call_soon_threadsafe` / self-pipe, ~14 %), libvirt's timer dispatch
  (~12 %), and in worker threads one `lookupByUUIDString` RPC per lifecycle event from the domain
  cache (`DomainInfoCache.on_event` marks *every* defined/undefined/started/stopped domain dirty,
  and `read_one` looks it up again even when it was just undefined).
  Suggested fixes: in `events_stream`, drain what the subscription holds with `receive_nowait`
  and write it in one `write`; in `DomainInfoCache.on_event`, drop the entry on `undefined`
  without an RPC and refresh only on `defined`/metadata/device/tunable; coalesce
  `ThreadSafeEventImpl.update_handle` calls for a watch that already has an update queued.
- **Unpaced generator.** libvirtd's test driver produces ~9,000 events/s from 8 threads; virtmon
  delivers about 2,000/s under that load (the generator and libvirtd take most of the 2 cores),
  so the stream subscriber's queue (1,000) fills and the bus cuts it off as designed (an overflow
  notice with `since`). Nothing is lost from the journal.
- **Cycle ratio on the test driver.** The test driver answers the bulk call in a few ms, so the
  fixed costs dominate: node statistics (~10 RPCs, ~5 ms), the admin helper round trip (~2 ms),
  and rendering *both* Prometheus text and OpenMetrics (plus gzip of each) every cycle (~25 ms at
  12,000 samples). Rendering OpenMetrics lazily, on the first request that asks for it in a cycle,
  would halve the render cost. On real domains the bulk call dominates and the ratio is what
  matters (target ≤ 1.2).
- **Cycle ratio on the lab's KVM domains** is measured on a lab shared with other engineers'
  tests: the domain count includes their domains, and the spread (p90) shows their load.
- **Scrape p99 with cycles running.** A scrape is ~0.3 ms of loop time; one that arrives while a
  cycle runs its collectors (on the loop thread, not in a worker) waits for them. With the
  default 15 s interval that overlap is rare; at 1 s it shows in p99/max. Running
  `run_collectors` in the render worker thread would remove it.
- **Domain cache resync** reads every domain's XML in *one* call on the shared, serialised
  connection (4 RPCs per domain): at 5,000 domains the first cycles wait for it
  (`domain_cache_resync_s` in results.json). Chunking the resync would bound that wait.
"""


def document(info: dict[str, Any], lines: list[Row], results: dict[str, Any]) -> str:
    """docs/PERFORMANCE.md."""
    missed = [r for r in lines if r.met is False]
    kvm = results.get("cycle_kvm", {})
    text = [
        "# Performance",
        "",
        "Generated by `python -m bench` (`make bench`); do not edit by hand. Raw figures:",
        "bench/results/results.json. Each scenario runs in its own process against the lab's",
        "libvirtd (tests/lab); the test driver is reached through libvirtd",
        "(`test+unix:///...`), never in-process.",
        "",
        "## Machine",
        "",
        f"- date: {info['date']}",
        f"- `uname -a`: {info['uname']}",
        f"- cores: {info['cores']} ({info['cpu']}), memory {info['memory_gib']} GiB",
        f"- libvirt: library {info['libvirt_library']}, daemon `{info['libvirtd']}`",
        f"- Python {info['python']}",
        f"- KVM scenario domains: {kvm.get('created_domains', '?')} created for the run, "
        f"{kvm.get('domains', '?')} on the host in total",
        "",
        "## Results",
        "",
        table(lines, markdown=True),
        "",
        "## Targets missed in this run",
        "",
    ]
    text += [f"- {r.area}: {r.figure} = {r.value} (target {r.target})"
             for r in missed] or ["- none"]
    text += ["", NOTES]
    return "\n".join(text)


def main() -> int:
    """Run, print, write."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="shorter runs (for a smoke test)")
    args = parser.parse_args()
    started = time.monotonic()
    info = machine()
    results = run_all(args.quick)
    lines = rows(results)
    print(table(lines, markdown=False))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "results.json"
    payload = {"machine": info, "results": results,
               "table": [r.__dict__ | {"status": r.status} for r in lines],
               "wall_s": round(time.monotonic() - started, 1)}
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(document(info, lines, results) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)} and {DOC.relative_to(ROOT)} "
          f"in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
