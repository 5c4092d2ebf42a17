"""The Python floor: the least an exporter built on virtmon's libraries can spend.

The sweep runs this beside the peers, so that its curves show what part of virtmon's cost is the
language and its libraries (libvirt-python, asyncio, aiohttp) and what part is virtmon's own.
Every interval, in one worker thread: the bulk call with the stats groups it is given (NOWAIT),
then node info, each CPU's statistics and the node's memory statistics; each numeric value
becomes one line with the domain's name as its only label; the body is gzipped once. aiohttp
serves the last body on ``GET /metrics``. Nothing else: no events, no checks on names or types,
no series of its own, no configuration, no control API. What is left, the interpreter, the event
loop, the thread hand-off, the libvirt calls, the formatting and the HTTP server, is paid by any
exporter made of these parts.

It is run as a script (not ``-m``), so that importing the ``bench`` package does not add to its
memory:

    python bench/python_floor.py URI PORT INTERVAL STATS_FLAGS
"""

from __future__ import annotations

import asyncio
import gzip
import sys

import libvirt
from aiohttp import web

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def node_lines(conn: libvirt.virConnect) -> list[str]:
    """Each CPU's statistics and the node's memory statistics (what a driver supports)."""
    lines = []
    for cpu in range(conn.getInfo()[2]):
        try:
            stats = conn.getCPUStats(cpu)
        except libvirt.libvirtError:  # the test driver has none
            continue
        lines += [f'floor_node_cpu_{key}{{cpu="{cpu}"}} {value}' for key, value in stats.items()]
    try:
        memory = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
    except libvirt.libvirtError:
        memory = {}
    lines += [f"floor_node_memory_{key} {value}" for key, value in memory.items()]
    return lines


def collect(conn: libvirt.virConnect, stats_flags: int) -> bytes:
    """One interval's body, gzipped (blocking: in a worker thread)."""
    lines = []
    nowait = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
    for dom, stats in conn.getAllDomainStats(stats_flags, nowait):
        name = dom.name()
        lines += [f'floor_{key.replace(".", "_")}{{domain="{name}"}} {value}'
                  for key, value in stats.items() if isinstance(value, int | float)]
    lines += node_lines(conn)
    lines.append("# EOF\n")
    return gzip.compress("\n".join(lines).encode(), compresslevel=6)


async def serve(uri: str, port: int, interval: float, stats_flags: int) -> None:
    """Collect every interval; serve the last body."""
    conn = await asyncio.to_thread(libvirt.openReadOnly, uri)
    body = await asyncio.to_thread(collect, conn, stats_flags)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE,
                                                "Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    while True:
        await asyncio.sleep(interval)
        body = await asyncio.to_thread(collect, conn, stats_flags)


def main() -> None:
    """Parse the four arguments and serve until stopped."""
    uri, port, interval, flags = sys.argv[1:5]
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    asyncio.run(serve(uri, int(port), float(interval), int(flags)))


if __name__ == "__main__":
    main()
