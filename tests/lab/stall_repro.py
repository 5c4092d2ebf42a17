"""Reproduces libvirt 9.0's libvirtd crash after stalls: ``python -m tests.lab.stall_repro [N]``.

Not part of the suite (it crashes the lab's libvirtd about one run of 20 cycles in three, and the
suite must pass). Each cycle starts a virtmon daemon on the lab with a fast keepalive (1 s x 2),
SIGSTOPs libvirtd, then either stops the daemon or lets keepalive drop its connection and
reconnect, and SIGCONTs libvirtd; N cycles of each kind (10 by default). It exits 1 naming the
cycle where libvirtd died, and brings the lab back.

What was seen (2026-12, Debian 12, libvirt 9.0.0-4+deb12u2): libvirtd dies with SIGSEGV in a
worker thread inside ``virNetServerClientCloseLocked`` -> the remote program's client-close hook
(``remoteClientFreePrivateCallbacks``). Its log shows, for the client being closed,
"unexpected incomplete domain callback N" for several entries and, shortly before, "could not
find event callback X for deletion" / "unexpected domain event deregister failure": the hook
walks event callbacks that were already deregistered, as if it ran twice for one client. Tried
in virtmon without a change in the crash rate (each about 1 run in 3 of this script): a cheap
call before deregistering on close (so no deregistration is queued on a stopped libvirtd), and
enabling keepalive only after the events are registered. Closing without deregistering is not an
option: each registered callback holds a reference, so the connection would stay open.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from tests.daemon import daemon_config, running_daemon
from tests.lab import lab as lab_module
from tests.waiting import wait_until
from virtmon.virt.connection import State
from virtmon.virt.eventloop import register_event_impl


async def cycle(kind: str, pid: int) -> None:
    """One stall: ``stop`` (virtmon stops while libvirtd is stopped) or ``lost`` (keepalive
    drops the connection, libvirtd continues, virtmon reconnects)."""
    state = Path(tempfile.mkdtemp(prefix="vm-", dir="/tmp"))
    cfg = daemon_config(state, libvirt={"uri": lab_module.URI, "keepalive_interval": 1,
                                        "keepalive_count": 2, "open_timeout": 3.0})
    try:
        async with running_daemon(cfg) as daemon:
            os.kill(pid, signal.SIGSTOP)
            if kind == "lost":
                await wait_until(lambda: daemon.supervisor.state is not State.CONNECTED, 15, 0.1)
                os.kill(pid, signal.SIGCONT)
                await wait_until(lambda: daemon.supervisor.state is State.CONNECTED, 30, 0.1)
            else:
                await asyncio.sleep(0.2)
    finally:
        os.kill(pid, signal.SIGCONT)
        shutil.rmtree(state, ignore_errors=True)


async def main(cycles: int) -> int:
    """Run the cycles; 1 (naming the cycle) if libvirtd died."""
    register_event_impl()
    pid = lab_module.libvirtd_pid()
    assert pid is not None, "the lab is down: make lab-up"
    for kind in ("stop", "lost"):
        for number in range(cycles):
            await cycle(kind, pid)
            await asyncio.sleep(0.3)
            if lab_module.libvirtd_pid() != pid:
                print(f"libvirtd died after {kind} cycle {number}\n{lab_module.log_tail(12)}")
                lab_module.up()
                return 1
    print(f"libvirtd survived {cycles} cycles of each kind")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)))
