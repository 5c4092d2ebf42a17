"""The sweep's results (bench/results/sweep.json) as plots and a table.

Reads what ``python -m bench.bench_sweep`` wrote and can be rerun at will: one PNG per cost in
docs/ (perf-*.png: each cost against the number of domains, log x, one line per tool), and the
sweep section of docs/PERFORMANCE.md (between its markers; ``python -m bench`` keeps it when it
regenerates the rest). The medians of a point's repeats are plotted and tabulated; a point whose
repeats spread by more than half their median is marked noisy (hollow marker, * in the table).

    python -m bench.sweep_plots [--results bench/results/sweep.json] [--docs docs]
"""

from __future__ import annotations

import argparse
import json
import statistics
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A KVM domain with no OS costs ~21 MiB of host memory (docs: LAB.md) and may touch its 64 MiB.
KVM_DOMAIN_MIB = 96.0
# Left free for everyone else on the machine.
KVM_RESERVE_MIB = 4096.0
# Repeats whose spread (max - min) exceeds this share of their median mark a point noisy.
NOISY_SPREAD = 0.5

# In plotting order: the tools, then the floors (the least any Python exporter of virtmon's
# libraries spends, and the bare call).
TOOLS = {
    "virtmon": "virtmon",
    "libvirt_exporter": "kumina (prometheus-libvirt-exporter 0.2)",
    "collectd": "collectd 5.12 virt + write_prometheus",
    "python_floor": "Python floor (bench/python_floor.py)",
    "bare": "bare getAllDomainStats",
}
SCENARIOS = {
    "test": "test-driver domains through libvirtd",
    "kvm": "lab KVM domains made for the run",
}


@dataclass(frozen=True)
class Cost:
    """One plotted cost: its figure file, title, unit, the point fields it plots, y scale."""

    slug: str
    title: str
    unit: str
    # (field, line style label): several fields share one plot (p50 and p99).
    fields: tuple[tuple[str, str], ...]
    # matplotlib's: "symlog" is linear below 10 (CPU figures of 0, under the 10 ms tick).
    y_scale: str = "log"


COSTS = (
    Cost("scrape-latency", "Scrape latency, 1 scraper", "ms",
         (("scrape_p50_ms", "p50"), ("scrape_p99_ms", "p99"))),
    Cost("cpu-per-interval", "Tool CPU per collection interval (one scrape in it)", "ms",
         (("cpu_per_interval_ms", ""),), "symlog"),
    Cost("rss", "RSS, process tree (sum of peaks)", "MiB", (("rss_peak_mib", ""),), "linear"),
    Cost("cycle-time", "Cycle time (collection wall time)", "ms", (("cycle_ms", ""),)),
)
FIELDS = tuple(field for cost in COSTS for field, _ in cost.fields)

# What the last full run showed, written by hand after it (the figures above are regenerated).
NOTES = """\
What the run of 2026-12-07 (15:05-15:45 UTC) shows. virtmon ran at commit cd4d801: after the
carried samples, the lines written again and the bounded caches ("Samples carried" above); from
about the third 10-domain repeat on with c64f122 too, made during the run (the alert engine
looks up one reading time per threshold rule and cycle, nothing measurable at this scale). The
machine was quiet (1-minute load average 0.02-1.05 at the start of a point) and few points are
noisy. It is not the machine of the run before (an Intel Xeon now, an AMD EPYC then): collectd
took 24-30 % less CPU here at 1,000-10,000 domains, virtmon 35-50 % less (18.2, 70.8 and 149 ms
against 27.9, 142 and 274), so compare tools within this run only. New in this run: the Python
floor, and a tool that timed out is not run again in its scenario (the exporter timed out at
5,000 domains; it answered at 1,000 this time, in 0.33 s).

- **CPU per interval.** From 100 test domains on, and at 20 KVM domains, virtmon costs least of
  the three: 7.5 ms against 9.0 (collectd) and 19.6 (the exporter) at 100, 18.2 against 68.5
  and 89 at 1,000, 71 against 340 at 5,000, 149 against 686 at 10,000; 8.0 against 9.7 and 13.6
  at 20 KVM domains. **At 10 test domains and at 1, 5 and 10 KVM domains it does not**: 6.0-8.4
  ms against collectd's 1.4-6.6, and the exporter's 4.2-5.0 at 10 test and 1 KVM domains.
- **The Python floor says which of those misses a Python exporter can avoid.** It spends 2.4 ms
  per interval at 10 test domains and 2.5 at 1 KVM domain, where collectd spends 1.4 and 2.0:
  there no exporter of virtmon's libraries (libvirt-python, asyncio, aiohttp) reaches collectd,
  whatever it leaves out. At 5 and 10 KVM domains the floor (3.0, 3.4 ms) is below collectd
  (3.9, 6.6) and virtmon (6.7, 8.4) is not: there the miss is virtmon's own 3.7-5.0 ms above the
  floor. That margin is near constant (3.6-5.0 ms from 10 to 100 test and 1 to 20 KVM
  domains): a cycle's fixed work (four thread hand-offs, the node's free pages and KSM
  parameters, ~180 families made and rendered with the process series, the threshold rules,
  virtmon's own series) and its background (0.09 ms per second with no cycle at all, measured
  apart at 10 test domains; strace of an idle daemon on the lab's libvirtd over 20 s shows
  only libvirtd's keepalive every 5 s and virtmon's answer, through libvirtaio). Above 1,000
  domains the margin grows with the domains (10.5 ms at 1,000, 32 at 5,000, 91 at 10,000):
  typed, named, unit-converted series, about 30 per domain, against the floor's untyped line
  per value.
- **Scrape latency.** virtmon's p50 stays at 0.8-1.3 ms at every size (it serves what its last
  cycle rendered); collectd's grows from 0.58 ms at 10 to 24 ms at 10,000 test domains, the
  exporter's with its per-domain calls from 9 ms at 10 to 334 ms at 1,000. **At 10 and 100
  test domains and 1-10 KVM domains collectd answers 0.13-0.4 ms sooner** (0.51-0.72 against
  0.81-0.96 ms), and the Python floor is where virtmon is (0.80-0.90 ms): aiohttp's request
  handling against libmicrohttpd's, which no exporter served by aiohttp avoids.
- **RSS.** virtmon's process tree (daemon and admin helper, sum of their peaks) is 89-90 MiB up
  to 100 test and 20 KVM domains, 100 at 1,000, 134 at 5,000 and 178 at 10,000; collectd's
  19-41 MiB up to 5,000 and 83 at 10,000; the exporter's 32-33 MiB; the Python floor's 49-63
  MiB, which is what the interpreter, aiohttp and libvirt-python hold before any series. The
  targets: 89 MiB at 10 KVM domains (target 72) missed, 100 at 1,000 (target 100) met at the
  limit, 134 at 5,000 (target 180) met. Summed peaks count the pages the daemon and the helper
  share (libvirt, libpython) twice.
- **Cycle time.** virtmon's cycle over the bare call with the same groups: 4.4 times at 1,000
  test domains (19.0 / 4.3 ms), 3.2 at 5,000 (75 / 23), 3.1 at 10,000 (150 / 48); on KVM
  domains 1.1 at 10 (64 / 58 ms) and 1.1 at 20 (101 / 90), where the bulk call's time is
  QEMU's answers.
- **libvirtd's CPU** per interval is in the results file (`libvirtd_cpu_per_interval_ms`) and
  not tabulated: it counts whatever else the lab was doing, not only the tool's calls.
"""

BEGIN = "<!-- sweep: written by python -m bench.sweep_plots; kept by python -m bench -->"
END = "<!-- sweep: end -->"


def kvm_sizes_that_fit(sizes: list[int], available_mib: float,
                       per_domain_mib: float = KVM_DOMAIN_MIB,
                       reserve_mib: float = KVM_RESERVE_MIB) -> list[int]:
    """The KVM sizes whose domains fit in the available memory, leaving the reserve free."""
    room = (available_mib - reserve_mib) / per_domain_mib
    return [size for size in sorted(sizes) if size <= room]


@dataclass(frozen=True)
class Figure:
    """One field at one point over its repeats: the median, the values, noisy or not."""

    median: float
    values: tuple[float, ...]

    @property
    def noisy(self) -> bool:
        """The repeats spread by more than NOISY_SPREAD of the median."""
        if len(self.values) < 2:
            return False
        spread = max(self.values) - min(self.values)
        return spread > NOISY_SPREAD * abs(self.median) if self.median else spread > 0


@dataclass(frozen=True)
class Point:
    """One (scenario, tool, domains) over its repeats."""

    scenario: str
    tool: str
    domains: int
    repeats: int
    timeouts: int
    errors: tuple[str, ...]
    figures: dict[str, Figure]
    # Repeats not run: the tool had timed out at this size or a smaller one.
    skipped: int = 0


def figure_of(values: Iterable[float | None]) -> Figure | None:
    """The median of the values measured (None where none was)."""
    measured = tuple(float(v) for v in values if v is not None)
    return Figure(statistics.median(measured), measured) if measured else None


def summarize(points: list[dict[str, Any]]) -> list[Point]:
    """The repeats of each (scenario, tool, domains) folded into medians, in run order."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for point in points:
        groups.setdefault((point["scenario"], point["tool"], point["domains"]), []).append(point)
    out = []
    for (scenario, tool, domains), runs in groups.items():
        ok = [run for run in runs if run.get("status") == "ok"]
        figures = {field: got for field in FIELDS
                   if (got := figure_of(run.get(field) for run in ok)) is not None}
        out.append(Point(scenario, tool, domains, len(runs),
                         sum(run.get("status") == "timeout" for run in runs),
                         tuple(run["error"] for run in runs if run.get("status") == "error"),
                         figures, sum(run.get("status") == "skipped" for run in runs)))
    return out


def series(summary: list[Point], scenario: str,
           field: str) -> dict[str, list[tuple[int, float, bool]]]:
    """{tool: [(domains, median, noisy)]} of one field in one scenario, by domains, in TOOLS order.

    Points without the field (a timeout, a tool that does not report it) are left out.
    """
    lines: dict[str, list[tuple[int, float, bool]]] = {}
    for point in summary:
        got = point.figures.get(field)
        if point.scenario == scenario and got is not None:
            lines.setdefault(point.tool, []).append((point.domains, got.median, got.noisy))
    return {tool: sorted(lines[tool]) for tool in TOOLS if tool in lines}


def timeouts(summary: list[Point], scenario: str) -> dict[str, list[int]]:
    """{tool: [domains]} where a repeat timed out, or was skipped after a timeout, in one
    scenario."""
    out: dict[str, list[int]] = {}
    for point in summary:
        if point.scenario == scenario and (point.timeouts or point.skipped):
            out.setdefault(point.tool, []).append(point.domains)
    return out


def conditions(data: dict[str, Any]) -> str:
    """Date, machine and load of the run, for the captions."""
    info = data["machine"]
    return (f"{info['date']}, {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB, "
            f"libvirt {info['libvirt_library']}; load average before "
            f"{info['load_average_before']}, after {info.get('load_average_after', '?')}")


def plot(data: dict[str, Any], docs: Path) -> list[Path]:
    """Write one PNG per cost into ``docs``; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(data["points"])
    styles = ("-", "--")
    colours = dict(zip(TOOLS, ("tab:blue", "tab:red", "tab:green", "tab:gray", "black"),
                       strict=True))
    written = []
    for cost in COSTS:
        fig, axes = plt.subplots(1, len(SCENARIOS), figsize=(12, 5.6))
        legend: dict[str, Any] = {}
        for axis, (scenario, title) in zip(axes, SCENARIOS.items(), strict=True):
            late = timeouts(summary, scenario)
            for (field, variant), style in zip(cost.fields, styles, strict=False):
                for tool, line in series(summary, scenario, field).items():
                    xs = [x for x, _, _ in line]
                    ys = [y for _, y, _ in line]
                    label = TOOLS[tool] + (f" {variant}" if variant else "")
                    axis.plot(xs, ys, style, color=colours[tool], label=label)
                    for x, y, noisy in line:
                        axis.plot([x], [y], "o", color=colours[tool],
                                  markerfacecolor="white" if noisy else colours[tool])
            for tool, sizes in late.items():
                axis.plot([], [], "x", color=colours[tool],
                          label=f"{TOOLS[tool]}: timed out (or not run after a timeout) at "
                                f"{', '.join(f'{n:,}' for n in sizes)} {scenario} domains")
            axis.set_xscale("log")
            if cost.y_scale == "symlog":
                axis.set_yscale("symlog", linthresh=10)
                axis.set_ylim(bottom=0)
            else:
                axis.set_yscale(cost.y_scale)
            axis.set_xlabel("domains")
            axis.set_ylabel(cost.unit)
            axis.set_title(title)
            axis.grid(True, which="both", alpha=0.3)
            for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
        fig.suptitle(f"{cost.title} (median of repeats; hollow: noisy)")
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=3, fontsize=7,
                   bbox_to_anchor=(0.5, 0.03))
        fig.text(0.5, 0.005, conditions(data), ha="center", fontsize=7)
        fig.tight_layout(rect=(0, 0.16, 1, 1))
        path = docs / f"perf-{cost.slug}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def cell(point: Point | None, field: str) -> str:
    """One table cell: the median (* if noisy), or why there is none."""
    if point is None:
        return ""
    got = point.figures.get(field)
    run = point.repeats - point.skipped
    if got is None:
        if point.timeouts:
            return f"timeout ({point.timeouts}/{run})"
        if point.skipped:
            return "not run (timed out before)"
        return "error" if point.errors else "-"
    text = f"{got.median:,.1f}" if got.median >= 10 else f"{got.median:.2f}"
    if got.noisy:
        text += f"* ({min(got.values):.3g} to {max(got.values):.3g})"
    if point.timeouts:
        text += f", timeout {point.timeouts}/{run}"
    return text


def table(summary: list[Point], scenario: str) -> str:
    """The figures of one scenario: a row per size and field, a column per tool."""
    by_key = {(p.tool, p.domains): p for p in summary if p.scenario == scenario}
    sizes = sorted({p.domains for p in summary if p.scenario == scenario})
    names = {"scrape_p50_ms": "scrape p50 (ms)", "scrape_p99_ms": "scrape p99 (ms)",
             "cpu_per_interval_ms": "CPU per interval (ms)", "rss_peak_mib": "RSS (MiB)",
             "cycle_ms": "cycle (ms)"}
    lines = ["| domains | figure | " + " | ".join(TOOLS.values()) + " |",
             "|---:|---|" + "---:|" * len(TOOLS)]
    for size in sizes:
        for field in FIELDS:
            lines.append(f"| {size:,} | {names[field]} | "
                         + " | ".join(cell(by_key.get((tool, size)), field) for tool in TOOLS)
                         + " |")
    return "\n".join(lines)


def section(data: dict[str, Any], notes: str = "") -> str:
    """The sweep section of docs/PERFORMANCE.md, markers included."""
    summary = summarize(data["points"])
    settings = data["settings"]
    host = {p["domains"]: p["host_domains"] for p in data["points"] if p["scenario"] == "kvm"}
    about = (
        f"`make bench-sweep` (`python -m bench.bench_sweep`, then `python -m bench.sweep_plots`),"
        f" one run: {conditions(data)}; {data['wall_s'] / 60:.0f} minutes, which is why it is not "
        "part of `make bench`. Results: bench/results/sweep.json; `make bench-plots` redraws "
        "the plots and this section from it. Each point is the "
        f"median of {settings['repeat']} repeats (each tool started afresh); * marks a noisy "
        f"point (repeats spread by more than {NOISY_SPREAD:.0%} of the median; the range "
        "follows). Once a tool is ready it is left alone for an interval plus 1 ms per domain "
        "(virtmon's start-up resync reads every domain). virtmon, collectd and the Python floor "
        f"collect every {settings['interval']:g} s; the exporter collects on each scrape. The "
        "Python floor (bench/python_floor.py) is not a peer: it is the least an exporter made of "
        "virtmon's libraries (libvirt-python, asyncio, aiohttp) spends, the same libvirt calls "
        "in one worker thread, every value one line, gzipped, served by aiohttp, nothing else. "
        "Scrape latency: "
        f"up to {settings['requests']} GETs from one scraper, none started after "
        f"{settings['scrape_budget']:g} s. CPU per interval: the CPU time of the tool's process "
        f"tree over {settings['intervals']} intervals with one scrape each, read from "
        f"{settings.get('cpu_clock', 'utime+stime in /proc/PID/stat (10 ms ticks)')}; for the "
        "exporter, per scrape. RSS: the "
        "sum of the peaks of the tool's processes (virtmon's includes its admin helper). Cycle: "
        "virtmon's `virtmon_collection_duration_seconds`, the exporter's scrape, the bare call "
        "with virtmon's stats groups (median of "
        f"{settings['bare_calls']}); collectd does not export its read time. A tool gets "
        f"{settings['point_timeout']:g} s per point; after a timeout it is not run again in that "
        "scenario (later repeats and larger sizes: \"not run\"). KVM points: the tools see every "
        "domain on the shared host (" + ", ".join(f"{n} made: {h} on the host" for n, h in
                                        sorted(host.items())) + ")."
    )
    text = [BEGIN, "## Curves: each cost against the number of domains", "",
            textwrap.fill(about, 100, break_on_hyphens=False), ""]
    for cost in COSTS:
        text += [f"![{cost.title}](perf-{cost.slug}.png)", ""]
    for scenario, title in SCENARIOS.items():
        if any(p.scenario == scenario for p in summary):
            text += [f"### {title[0].upper()}{title[1:]}", "", table(summary, scenario), ""]
    if notes:
        text += [notes.strip(), ""]
    text.append(END)
    return "\n".join(text)


def kept_section(document: str) -> str:
    """The sweep section of a document, markers included ('' if it has none)."""
    start = document.find(BEGIN)
    end = document.find(END, start)
    if start < 0 or end < 0:
        return ""
    return document[start:end + len(END)]


def with_section(document: str, new: str) -> str:
    """The document with its sweep section replaced by ``new`` (appended if it had none)."""
    old = kept_section(document)
    if old:
        return document.replace(old, new)
    return document.rstrip("\n") + "\n\n" + new + "\n"


def main() -> None:
    """Read the results, write the plots and the section."""
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=root / "bench" / "results" / "sweep.json")
    parser.add_argument("--docs", type=Path, default=root / "docs")
    args = parser.parse_args()
    data = json.loads(args.results.read_text(encoding="utf-8"))
    for path in plot(data, args.docs):
        print(f"wrote {path}")
    doc = args.docs / "PERFORMANCE.md"
    doc.write_text(with_section(doc.read_text(encoding="utf-8"), section(data, NOTES)),
                   encoding="utf-8")
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
