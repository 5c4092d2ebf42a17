"""A live migration between the lab (libvirt 9.0, QEMU 7.2) and the second host (11.3, QEMU 10).

A lab guest with a file written on its data disk migrates to the second host through the lab
virtmon's control API, the disk copied over NBD, each way once: `domain.migrate_to_uri`
(peer-to-peer: the lab's libvirtd connects to the second host) and `domain.migrate` (managed:
the lab's virtmon connects to the destination its configuration names and drives
`virDomainMigrate3` between the two). It comes back with libvirt's own `virDomainMigrate3`
(the container's libvirtd drives it, the lab's is the destination). Each virtmon sees its side:
on the lab the domain stops (migrated) and leaves the exposition, and journals QEMU's passes
(migration_iteration) and the job's end with its figures (job_completed); on the second host it
starts (migrated) and is scraped there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.conftest import call, daemon_config, running_daemon
from tests.host2.machine import HOST_ADDRESS, PEER_ADDRESS, PEER_URI, Booted
from tests.host2.test_libvirt11 import agent, scrape_from_outside, wait_for
from tests.integration.test_lab_event_catalog import of, unique_domain
from tests.lab import guest
from tests.lab import lab as lab_module
from tests.streamclient import follow, lifecycle
from tests.waiting import exposition_until
from virtmon.ctl.client import ControlClient

pytestmark = pytest.mark.lab

MARKER = f"migrated-{uuid.uuid4().hex}"
TIMEOUT = 120.0
# The lab virtmon's name for the second host (control.migration_destinations).
DESTINATION = "second-host"
MIGRATE_FLAGS = ["live", "non_shared_disk", "persist_dest", "undefine_source"]
# Each operation's own arguments: where to, and how.
WAYS = {
    "domain.migrate_to_uri": {"uri": PEER_URI, "flags": [*MIGRATE_FLAGS, "peer2peer"]},
    "domain.migrate": {"destination": DESTINATION, "flags": MIGRATE_FLAGS},
}


@pytest.fixture
async def name(lab: str) -> AsyncIterator[str]:
    """A unique guest name; the domain is removed from the lab afterwards, whatever happened."""
    async with unique_domain(lab, "t-mig") as domain:
        yield domain


def prepare_destination(host: Booted, dom: Any) -> None:
    """What the destination needs at the same paths: the guest's kernel and initramfs, and an
    empty disk of the data disk's size (the migration copies its content)."""
    image = guest.ensure_image()
    for source in (image.kernel, image.initrd):
        target = host.root / str(source).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    disk = guest.IMAGE_DIR / f"{dom.name()}.data.raw"
    target = host.root / str(disk).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as empty:
        empty.truncate(disk.stat().st_size)


def guest_says(host: Booted, domain: str, script: str) -> str:
    """Output of a shell command in the guest while it runs on the second host."""
    pid = agent(host, domain, "guest-exec", {"path": "/bin/sh", "arg": ["-c", script],
                                             "capture-output": True})["pid"]
    status = wait_for("the guest command", lambda: (
        s if (s := agent(host, domain, "guest-exec-status", {"pid": pid}))["exited"] else None))
    return base64.b64decode(status.get("out-data", "")).decode()


@pytest.mark.parametrize("operation", list(WAYS))
async def test_a_guest_migrates_to_libvirt_11_and_back(
    host2: Booted, lab_conn: Any, name: str, short_tmp: Path, operation: str
) -> None:
    """Through virtmon's control API (peer-to-peer, or managed by virtmon with a configured
    destination) the lab guest migrates live (disk copied) to the 11.3 host: the lab's virtmon
    journals its passes, stopped/migrated and job_completed and drops the domain from its
    exposition; the second host's journals started/migrated and scrapes it running with its
    disk's content; libvirt's Migrate3 brings it back, running, intact."""
    dom = await call(lambda: guest.create(lab_conn, name, mark=lab_module.LAB_MARK))
    await call(guest.wait_agent, dom, TIMEOUT)
    code, out = await call(guest.guest_exec, dom, f"echo {MARKER} > /data/marker && sync")
    assert code == 0, out
    await call(prepare_destination, host2, dom)
    known_as = await call(dom.UUIDString)

    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI}, control={
        "allow_write": True, "migration_destinations": {DESTINATION: PEER_URI}})
    async with running_daemon(cfg) as daemon, \
            follow(daemon.control_socket, f"domain={name}") as stream:
        client = ControlClient(str(daemon.control_socket), timeout=TIMEOUT)
        moved = await asyncio.to_thread(
            client.call, operation, domain=name, **WAYS[operation],
            params={"migrate_uri": f"tcp://{PEER_ADDRESS}", "listen_address": PEER_ADDRESS})
        await stream.wait_for(lifecycle(name, "stopped", "migrated"), TIMEOUT)
        completed = await stream.wait_for(of("job_completed"), TIMEOUT)
        journal = [e.to_dict() for e in await call(daemon.journal.read_since, 0, 10_000)
                   if e.domain == name]
        await exposition_until(daemon.scheduler,
                               lambda text: f'domain="{name}"' not in text, TIMEOUT)
    # domain.migrate answers with the domain as the destination knows it.
    assert moved == ({"name": name, "uuid": known_as}
                     if operation == "domain.migrate" else None), moved
    # The job's end, with QEMU's figures: everything sent, nothing remaining.
    assert completed["detail"] == "migration_out", completed
    figures = completed["payload"]["params"]
    assert figures["memory_total"] > 0 and figures["memory_remaining"] == 0, figures
    assert figures["data_processed"] > 0 and figures["data_remaining"] == 0, figures
    # QEMU's passes over the guest's memory, each journaled before the domain stopped there.
    kinds = [(e["kind"], e["detail"]) for e in journal]
    iterations = [e["payload"]["iteration"] for e in journal if e["kind"] == "migration_iteration"]
    assert iterations and iterations == sorted(iterations), kinds
    assert kinds.index(("migration_iteration", None)) < kinds.index(("lifecycle", "migrated")), \
        kinds

    def journaled_on_peer() -> list[dict[str, Any]]:
        out = host2.run(f"virtmonctl events --json --kind lifecycle --domain {name}").stdout
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [e for e in events if (e["name"], e["detail"]) in (("started", "migrated"),
                                                                  ("resumed", "migrated"))]

    await call(wait_for, "started/migrated on the second host", journaled_on_peer, TIMEOUT)
    await call(wait_for, "the guest in the second host's scrape",
               lambda: f'libvirt_domain_info_state{{domain="{name}"}} 1' in
               scrape_from_outside(host2), TIMEOUT)
    assert (await call(guest_says, host2, name, "cat /data/marker")).strip() == MARKER

    def migrate_back() -> Any:
        source = libvirt.open(PEER_URI)
        try:
            return source.lookupByName(name).migrate3(
                lab_conn, {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{HOST_ADDRESS}",
                           libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: HOST_ADDRESS},
                libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_NON_SHARED_DISK
                | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
        finally:
            source.close()

    back = await call(migrate_back)
    assert back.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    code, out = await call(guest.guest_exec, back, "cat /data/marker")
    assert (code, out.strip()) == (0, MARKER)
    assert name not in host2.run("virsh list --all --name").stdout.split()
