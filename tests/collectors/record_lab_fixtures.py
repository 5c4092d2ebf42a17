"""Record `fixtures/lab_variants.json` from the lab: states a cycle meets, as libvirt gives them.

    .venv/bin/python -m tests.collectors.record_lab_fixtures      # the lab must be up

Four records of fresh `t-rec-*` domains, each from one bulk call with every stats group
(`getAllDomainStats`-style, through `domainListGetStats`):

- `t-rec-running`: running, after a little disk I/O;
- `t-rec-paused`: paused;
- `t-rec-chain`: running over an external disk-only snapshot, recorded with ``BACKING`` so the
  block group lists both layers;
- `t-rec-held`: running while another client's suspend hangs on its stopped QEMU (holding the
  domain's job), recorded with ``NOWAIT`` as a cycle would see it.

The domains are removed afterwards. Volatile values (times, counters) are what they were at
recording; golden files are regenerated from the result (`pytest tests/collectors
--update-golden`) and reviewed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import libvirt

from tests.lab import lab as lab_module

OUT = Path(__file__).resolve().parent / "fixtures" / "lab_variants.json"
ALL_GROUPS = 0  # every group libvirt knows
NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
BACKING = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING


def record(conn: Any, dom: Any, flags: int = 0) -> dict[str, Any]:
    """One domain's stats record as a fixture entry."""
    [(found, stats)] = conn.domainListGetStats([dom], ALL_GROUPS, flags)
    return {"name": found.name(), "uuid": found.UUIDString(), "stats": dict(sorted(stats.items()))}


def qemu_pid(name: str) -> int:
    """The QEMU process of a running lab domain."""
    return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())


def main() -> None:
    """Create, record and remove the four domains; write the fixture file."""
    conn = libvirt.open(lab_module.URI)
    names = ["t-rec-running", "t-rec-paused", "t-rec-chain", "t-rec-held"]
    records = []
    try:
        doms = {name: lab_module.create_domain(conn, name) for name in names}
        time.sleep(2.0)  # SeaBIOS has probed the disk: some reads to record
        records.append(record(conn, doms["t-rec-running"]))
        doms["t-rec-paused"].suspend()
        records.append(record(conn, doms["t-rec-paused"]))
        overlay = lab_module.IMAGE_DIR / "t-rec-chain.overlay"
        doms["t-rec-chain"].snapshotCreateXML(
            f"<domainsnapshot><disks><disk name='vda' snapshot='external'><source file="
            f"'{overlay}'/></disk></disks></domainsnapshot>",
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
        records.append(record(conn, doms["t-rec-chain"], BACKING))
        holder = libvirt.open(lab_module.URI)
        held = holder.lookupByName("t-rec-held")
        qemu = qemu_pid("t-rec-held")
        os.kill(qemu, signal.SIGSTOP)
        suspend = threading.Thread(target=lambda: _quietly(held.suspend), daemon=True)
        try:
            suspend.start()
            time.sleep(1.0)  # the suspend holds the job and waits on the stopped monitor
            records.append(record(conn, doms["t-rec-held"], NOWAIT))
        finally:
            os.kill(qemu, signal.SIGCONT)
            suspend.join(timeout=30)
            holder.close()
    finally:
        for name in names:
            lab_module.remove_domain(conn, name)
        conn.close()
    OUT.write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {OUT} ({len(records)} records, "
          f"{sum(len(r['stats']) for r in records)} keys)")


def _quietly(call: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError):  # it may fail once QEMU runs again
        call()


if __name__ == "__main__":
    main()
