"""Admin API benchmark: one statistics snapshot through the helper process against the same
admin calls made directly.

The admin collector asks the helper (``python -m virtmon.admin.helper``, JSON lines over a
pipe) for one ``snapshot`` per cycle: every server's thread pool, client limits and clients with
their details. The floor is the same ``snapshot`` made in this process through the helper's own
ctypes binding, with no pipe and no JSON (this process never imports ``libvirt``, which the
admin library cannot share a process with). The ratio is what the helper's isolation costs on
top of libvirtd's answers; the loop lag is the daemon side's cost while snapshots run back to
back.

    python -m bench.bench_admin [--requests 200] [--uri libvirtd:///system]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from bench import LagMeter, emit, percentile, quiet_logging


def direct(uri: str, requests: int) -> list[float]:
    """Seconds per snapshot made in this process through the helper's ctypes binding."""
    from virtmon.admin.helper import Admin, Writer

    admin = Admin(uri, Writer(sys.stderr.buffer))  # events (none expected) to stderr
    admin.start()
    admin.dispatch("snapshot", {})  # opens the connection
    durations = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            admin.dispatch("snapshot", {})
            durations.append(time.perf_counter() - started)
    finally:
        admin.close()
    return durations


async def through_helper(uri: str, requests: int) -> tuple[list[float], dict[str, float],
                                                           int]:
    """Seconds per snapshot through the supervised helper, the loop's lag meanwhile, and the
    number of clients the last snapshot listed (a check that it carried the details)."""
    from virtmon.admin.client import AdminHelper

    durations = []
    async with AdminHelper(uri=uri) as helper:
        snapshot = await helper.request("snapshot", timeout=30)
        async with LagMeter().running() as lag:
            for _ in range(requests):
                started = time.perf_counter()
                snapshot = await helper.request("snapshot", timeout=30)
                durations.append(time.perf_counter() - started)
    clients = sum(len(server["clients"]) for server in snapshot["servers"].values())
    return durations, lag.summary(), clients


def ms(values: list[float], q: float) -> float:
    """A quantile in milliseconds, rounded for the table."""
    return round(percentile(values, q) * 1e3, 3)


def main() -> int:
    """Run both, print one JSON result line."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_admin")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--uri", default="libvirtd:///system")
    args = parser.parse_args()
    quiet_logging()
    floor = direct(args.uri, args.requests)
    helper, lag, clients = asyncio.run(through_helper(args.uri, args.requests))
    result: dict[str, Any] = {
        "requests": args.requests,
        "clients_listed": clients,
        "direct_p50_ms": ms(floor, 0.5), "direct_p99_ms": ms(floor, 0.99),
        "helper_p50_ms": ms(helper, 0.5), "helper_p99_ms": ms(helper, 0.99),
        "ratio_p50": round(percentile(helper, 0.5) / max(percentile(floor, 0.5), 1e-9), 2),
        **lag,
    }
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
