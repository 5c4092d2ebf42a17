"""Rendering benchmark: µs per sample for render alone and collect+render, vs prometheus_client.

Snapshot: 1,000 domains, each a renamed copy of a record taken from a lab KVM domain (1 vCPU,
1 disk, 1 NIC; tests/collectors/fixtures/lab_kvm.json), in the collector tests' snapshot (node
stats, host interfaces), all default collectors.
Prints a table and writes bench/results/render.json. Not a test.

    .venv/bin/python bench/bench_render.py [--domains N] [--repeat R]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.collectors.snapshots import load_records, make_snapshot  # noqa: E402
from virtmon.collectors import DEFAULT_ENABLED, build_collectors, run_collectors  # noqa: E402
from virtmon.collectors.snapshot import DomainRecord, StatsSnapshot  # noqa: E402
from virtmon.exposition.family import MetricFamily  # noqa: E402
from virtmon.exposition.render import render_openmetrics, render_text  # noqa: E402

# Recorded from a lab domain (1 vCPU, 1 disk, 1 NIC): tests/collectors/fixtures/README.md.
FIXTURE = ROOT / "tests" / "collectors" / "fixtures" / "lab_kvm.json"
RESULTS = ROOT / "bench" / "results" / "render.json"


def build_snapshot(domains: int) -> StatsSnapshot:
    """``domains`` renamed copies of the record of a lab KVM domain, in the collector tests'
    snapshot (XML info, node stats, host interfaces)."""
    [lab] = load_records(FIXTURE)
    records = tuple(
        DomainRecord(f"vm-{i:04d}", f"00000000-0000-4000-8000-{i:012d}", dict(lab.stats))
        for i in range(domains))
    return make_snapshot(records, groups=frozenset(
        {"state", "cpu_total", "balloon", "vcpu", "interface", "block"}))


class _Adapter:
    """Our families through prometheus_client's custom-collector interface."""

    def __init__(self, families: list[MetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            if not family.samples:
                continue
            names = list(family.label_names)
            metric: Metric
            if family.type == "info":
                metric = InfoMetricFamily(family.name[:-5], family.help, labels=names)
                for values, _ in family.samples:
                    metric.add_metric(list(values), {})
            else:
                cls = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
                metric = cls(family.name, family.help, labels=names)
                for values, value in family.samples:
                    metric.add_metric(list(values), value)
            yield metric


def best_and_median(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best and median wall time of `repeat` calls, with the GC off during each call."""
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        gc.enable()
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    snapshot = build_snapshot(args.domains)
    collectors = build_collectors(DEFAULT_ENABLED)
    families, _ = run_collectors(collectors, snapshot)
    text = render_text(families)
    samples = sum(1 for line in text.splitlines() if not line.startswith(b"#"))
    per_domain = sum(
        len([1 for values, _ in f.samples if values[:1] == ("vm-0000",)])
        for f in families
        if f.label_names[:1] == ("domain",)
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Adapter(families))
    theirs = generate_latest(registry)

    def collect_and_render() -> bytes:
        produced, _ = run_collectors(collectors, snapshot)
        return render_text(produced)

    runs = {
        "render_text": lambda: render_text(families),
        "render_openmetrics": lambda: render_openmetrics(families),
        "collect_only": lambda: run_collectors(collectors, snapshot),
        "collect_and_render_text": collect_and_render,
        "prometheus_client_generate_latest": lambda: generate_latest(registry),
    }
    results: dict[str, Any] = {
        "domains": args.domains,
        "samples": samples,
        "series_per_domain": per_domain,
        "text_bytes": len(text),
        "prometheus_client_bytes": len(theirs),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeat": args.repeat,
    }
    print(f"{args.domains} domains, {samples} samples ({per_domain} per domain), {len(text)} bytes")
    print(f"{'run':36} {'best ms':>9} {'median ms':>10} {'µs/sample':>10}")
    for name, fn in runs.items():
        best, median = best_and_median(fn, args.repeat)
        results[name] = {
            "best_s": best,
            "median_s": median,
            "us_per_sample_best": best / samples * 1e6,
            "us_per_sample_median": median / samples * 1e6,
        }
        print(f"{name:36} {best * 1e3:9.1f} {median * 1e3:10.1f} {median / samples * 1e6:10.3f}")
    ratio = (
        results["prometheus_client_generate_latest"]["median_s"]
        / results["render_text"]["median_s"]
    )
    results["speedup_vs_prometheus_client"] = ratio
    print(f"render_text is {ratio:.1f}x faster than generate_latest")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
