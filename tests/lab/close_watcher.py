"""A libvirt client in a process of its own that reports when its connection is closed.

Run as ``python -m tests.lab.close_watcher URI``: it prints ``ready``, then ``closed REASON``
when libvirtd closes its connection (exit 0), or exits 1 after 20 s. Tests use
:func:`close_watcher` to disconnect it through the admin API and see the close callback fire.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream


@dataclass
class Watcher:
    """The watcher process and its output lines."""

    process: Process
    lines: BufferedByteReceiveStream

    async def closed(self) -> bytes:
        """Wait for the close report and the exit; the report line."""
        with anyio.fail_after(20):
            line = await self.lines.receive_until(b"\n", 1000)
            assert await self.process.wait() == 0
        return line


@contextlib.asynccontextmanager
async def close_watcher(uri: str) -> AsyncIterator[Watcher]:
    """Start a watcher and wait until its connection is open."""
    command = [sys.executable, "-m", "tests.lab.close_watcher", uri]
    async with await anyio.open_process(command, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(20):
            assert await lines.receive_until(b"\n", 1000) == b"ready"
        yield Watcher(process, lines)


def main(uri: str) -> int:
    """Open a read-only connection with libvirt's default event loop; report its close."""
    import libvirt

    libvirt.virEventRegisterDefaultImpl()

    def loop() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=loop, daemon=True).start()
    conn = libvirt.openReadOnly(uri)
    done = threading.Event()

    def on_close(_conn: object, reason: int, _opaque: object) -> None:
        print("closed", reason, flush=True)
        done.set()

    conn.registerCloseCallback(on_close, None)
    print("ready", flush=True)
    return 0 if done.wait(20) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
