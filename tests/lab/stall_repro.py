"""Reproduces libvirt 9.0's libvirtd crash after stalls: ``python -m tests.lab.stall_repro [N]``.

Not part of the suite (the suite's twenty-stall test is its short form; before the fix below it
crashed the lab's libvirtd about one run of 20 cycles in three). Each cycle starts a virtmon
daemon on the lab with a fast keepalive (1 s x 2), SIGSTOPs libvirtd, then either stops the
daemon or lets keepalive drop its connection and reconnect, and SIGCONTs libvirtd; N cycles of
each kind (10 by default). It exits 1 naming the cycle where libvirtd died, and brings the lab
back.

What was seen (2026-12, Debian 12, libvirt 9.0.0-4+deb12u2): libvirtd dies with SIGSEGV in a
worker thread inside ``virNetServerClientCloseLocked`` -> the remote program's client-close hook
(``remoteClientFreePrivateCallbacks``), its log showing "unexpected incomplete domain callback N"
and "could not find event callback X for deletion". A debug log (filters ``1:rpc.netserverclient
1:daemon.remote``) of a private libvirtd showed why: the events connection had a call in flight
when libvirtd was stopped (the domain cache's ``listAllDomains``); keepalive closed the
connection; on SIGCONT libvirtd read the call and the EOF together, and its event loop (EOF) and
the worker answering the call (send failed) both closed the client at once, each walking the same
event callbacks. The domain cache now reads on a connection of its own, so the events connection
has no call in flight when a stall comes; this script and the suite's twenty-stall test check it.
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
