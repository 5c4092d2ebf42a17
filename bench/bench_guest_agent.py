"""The collection cycle with the guest-agent poller on: with a healthy agent, then a hung one.

One daemon on the lab (cycle every second, guest-agent polls every second with a 2 s deadline)
and one lab guest. The cycle's wall time and the gap between published cycles are measured for
``--cycles`` cycles while the guest's agent answers, then for as many while qemu-ga is stopped
with SIGSTOP inside the guest (each poll of that domain is abandoned after its deadline, then
skipped while the abandoned call is still inside libvirt). In one run, so that both phases see
the same machine.

    python -m bench.bench_guest_agent [--cycles 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any

import libvirt

from bench import daemon_config, emit, median, percentile, quiet_logging, running_daemon, short_tmp
from tests.lab import guest
from tests.lab import lab as lab_module
from tests.waiting import wait_until

INTERVAL = 1.0
POLL_TIMEOUT = 2.0


async def cycles(daemon: Any, count: int) -> dict[str, float]:
    """Wall time of ``count`` cycles and the gaps between their publications, in ms."""
    durations, gaps = [], []
    last = None
    for _ in range(count):
        await daemon.scheduler.wait_cycle()
        now = time.monotonic()
        durations.append(daemon.scheduler.stats.last_duration)
        if last is not None:
            gaps.append(now - last)
        last = now
    return {
        "cycle_median_ms": round(median(durations) * 1e3, 1),
        "cycle_p90_ms": round(percentile(durations, 0.9) * 1e3, 1),
        "cycle_max_ms": round(max(durations) * 1e3, 1),
        "gap_median_ms": round(median(gaps) * 1e3, 1),
        "gap_max_ms": round(max(gaps) * 1e3, 1),
    }


async def run(count: int) -> dict[str, Any]:
    """Both phases against one guest; the guest is removed after."""
    conn = await asyncio.to_thread(libvirt.open, lab_module.URI)
    name = f"bench-ga-{uuid.uuid4().hex[:8]}"
    try:
        with short_tmp() as tmp:
            cfg = daemon_config(tmp, lab_module.URI, INTERVAL, collect={
                "guest_agent": True, "guest_agent_interval": INTERVAL,
                "guest_agent_timeout": POLL_TIMEOUT})
            async with running_daemon(cfg) as daemon:
                poller = daemon.guest_agent
                dom = await asyncio.to_thread(guest.create, conn, name,
                                              mark=lab_module.LAB_MARK)
                await asyncio.to_thread(guest.wait_agent, dom, 120.0)

                def up() -> bool | None:
                    agent = next((a for a in poller.agents.values() if a.domain == name), None)
                    return None if agent is None else agent.up

                await wait_until(lambda: up() is True, 120.0, 0.2)
                healthy = await cycles(daemon, count)
                # Stopped for longer than the measurement, continued after it.
                hold = int(count * INTERVAL * 2 + 30)
                await asyncio.to_thread(
                    guest.spawn, dom, f"kill -STOP $(cat /run/qemu-ga.pid); sleep {hold}; "
                                      "kill -CONT $(cat /run/qemu-ga.pid)")
                await wait_until(lambda: up() is False, 60.0, 0.2)
                hung = await cycles(daemon, count)
                abandoned = poller.caller.abandoned_total
                agent_down_throughout = up() is False
                return {"cycles": count, "healthy": healthy, "hung": hung,
                        "guest_agent_abandoned": abandoned,
                        "agent_down_throughout": agent_down_throughout,
                        "cycle_failures": daemon.scheduler.stats.failures}
    finally:
        await asyncio.to_thread(lab_module.remove_domain, conn, name)
        await asyncio.to_thread(conn.close)


def main() -> int:
    """Print one JSON result line."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_guest_agent")
    parser.add_argument("--cycles", type=int, default=20)
    args = parser.parse_args()
    quiet_logging()
    emit(asyncio.run(run(args.cycles)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
