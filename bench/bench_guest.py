"""The lab's Linux guest: how long its image takes to build, and define → agent connected.

The build is made from scratch into a scratch directory (kernel package download and unpack,
initramfs), whatever the cache holds. Each boot defines and starts a fresh guest domain and
waits for libvirt's AGENT_LIFECYCLE ``connected`` event: the kernel booted, the modules loaded
and qemu-ga opened its channel. The figure includes libvirt's define and start.

    python -m bench.bench_guest [--boots 3]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt

from bench import emit, median, quiet_logging
from tests.lab import guest
from tests.lab import lab as lab_module


def build_seconds() -> float:
    """Seconds to build the image from nothing (download, unpack, initramfs)."""
    with tempfile.TemporaryDirectory(dir=guest.GUEST_DIR, prefix=".bench-") as tmp:
        started = time.perf_counter()
        guest.build(Path(tmp) / "image")
        return time.perf_counter() - started


def boot_seconds(conn: Any, connected: threading.Event, timeout: float = 120.0) -> float:
    """Seconds from define to the agent's ``connected`` event of one fresh guest."""
    name = f"bench-guest-{uuid.uuid4().hex[:8]}"
    connected.clear()
    try:
        started = time.perf_counter()
        guest.create(conn, name, mark=lab_module.LAB_MARK)
        if not connected.wait(timeout):
            raise RuntimeError(f"no agent connected within {timeout} s")
        return time.perf_counter() - started
    finally:
        lab_module.remove_domain(conn, name)


def main() -> int:
    """Build once, boot a few times, print one JSON result line."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_guest")
    parser.add_argument("--boots", type=int, default=3)
    args = parser.parse_args()
    quiet_logging()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    libvirt.virEventRegisterDefaultImpl()
    image = guest.ensure_image()
    build = build_seconds()
    conn = libvirt.open(lab_module.URI)
    kind = guest.virt_type(conn.getCapabilities())
    connected = threading.Event()

    def on_agent(_conn: Any, dom: Any, state: int, _reason: int, _opaque: Any) -> None:
        if (dom.name().startswith("bench-guest-")
                and state == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED):
            connected.set()

    def run_events() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=run_events, daemon=True).start()
    callback = conn.domainEventRegisterAny(
        None, libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, on_agent, None)
    try:
        boots = [boot_seconds(conn, connected) for _ in range(args.boots)]
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(callback)
        conn.close()
    emit({
        "virt_type": kind,
        "image_key": image.key,
        "initrd_mib": round(image.initrd.stat().st_size / 2**20, 1),
        "build_s": round(build, 1),
        "boots": [round(b, 2) for b in boots],
        "boot_median_s": round(median(boots), 2),
        "boot_max_s": round(max(boots), 2),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
