"""Every event of LAB.md's table that fires without a guest OS reaches the stream, decoded.

Each test runs its own daemon, follows the stream filtered to its own uniquely named domain,
triggers one row of the table on a real KVM domain and checks kind, name, detail and the payload
fields that matter. Rows covered elsewhere (define/start/suspend/resume/destroy/undefine,
``kill -9``, setMetadata) are in test_lab_events.py. The domains and the host-side tools are in
:mod:`tests.integration.event_domains`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.conftest import call, daemon_config, running_daemon
from tests.integration import event_domains as ed
from tests.integration.event_domains import Devices
from tests.lab import lab as lab_module
from tests.streamclient import Event, StreamFollower, follow, lifecycle

pytestmark = pytest.mark.lab

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
MIB = 1024 * 1024


@pytest.fixture
async def name(lab: str) -> AsyncIterator[str]:
    """A unique domain name for one test; the domain and its files are always removed after."""
    async with unique_domain(lab, "t-cat") as domain:
        yield domain


@contextlib.asynccontextmanager
async def unique_domain(lab: str, prefix: str) -> AsyncIterator[str]:
    """A unique domain name with a prefix for the body; the domain and its files are removed
    after, whatever happened."""
    domain = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        yield domain
    finally:
        # A connection of its own: the test's may have died with a libvirtd restart (other
        # engineers restart the shared daemon briefly), so wait for it rather than leak.
        conn = await call(open_within, lab, 30.0)
        try:
            await call(lab_module.remove_domain, conn, domain)
        finally:
            await call(conn.close)


def open_within(uri: str, timeout: float) -> Any:
    """libvirt.open, waiting up to ``timeout`` for a daemon that is restarting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.asynccontextmanager
async def watching(short_tmp: Path, domain: str) -> AsyncIterator[StreamFollower]:
    """A daemon on the lab and its stream, filtered to one domain, for the body of a ``with``."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab_module.URI})
    async with running_daemon(cfg) as daemon, \
            follow(daemon.control_socket, f"domain={domain}") as stream:
        yield stream


def of(kind: str, name: str | None = None, **payload: Any) -> Callable[[Event], bool]:
    """A matcher on kind, optionally name, and payload fields equal to the given values."""
    return lambda e: (e["kind"] == kind and (name is None or e["name"] == name)
                      and all(e["payload"].get(k) == v for k, v in payload.items()))


async def collect(stream: StreamFollower, match: Callable[[Event], bool], count: int,
                  timeout: float = 30.0) -> list[Event]:
    """Wait until ``count`` events match; return every match so far, in stream order."""
    await stream.wait_for(lambda _e: sum(map(match, stream.events)) >= count, timeout)
    return [e for e in stream.events if match(e)]


async def started(lab_conn: Any, stream: StreamFollower, domain: str,
                  devices: Devices | None = None, disk: Path | None = None) -> Any:
    """Define and start an event domain; return it once its start is in the stream."""
    dom = await call(ed.create, lab_conn, domain, devices or Devices(), disk)
    await stream.wait_for(lifecycle(domain, "started", "booted"))
    return dom


def assert_job_completed_save(event: Event) -> None:
    """A JOB_COMPLETED of a save: the operation named, the full statistics present."""
    assert (event["name"], event["detail"]) == ("job_completed", "save")
    payload = event["payload"]
    assert payload["operation"] == "save"
    assert payload["operation_code"] == libvirt.VIR_DOMAIN_JOB_OPERATION_SAVE
    params = payload["params"]
    assert params["operation"] == libvirt.VIR_DOMAIN_JOB_OPERATION_SAVE
    assert params["time_elapsed"] >= 0
    assert params["memory_total"] == params["data_total"] > 0
    assert params["data_processed"] > 0
    assert params["data_remaining"] == 0
    assert params["memory_iteration"] >= 1


async def test_save_and_restore(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """save gives iterations, job_completed(save) with stats, stopped/saved; restore: restored."""
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name)
        path = ed.image(name, "save")
        await call(dom.save, str(path))
        saved = await stream.wait_for(lifecycle(name, "stopped", "saved"))
        assert saved["payload"]["detail_code"] == libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED
        first = await stream.wait_for(of("migration_iteration", iteration=1))
        assert first["name"] == "migration_iteration" and first["detail"] is None
        job = await stream.wait_for(of("job_completed"))
        assert_job_completed_save(job)
        assert first["seq"] < job["seq"] < saved["seq"]
        await call(lab_conn.restore, str(path))
        restored = await stream.wait_for(lifecycle(name, "started", "restored"))
        assert restored["payload"]["detail_code"] == libvirt.VIR_DOMAIN_EVENT_STARTED_RESTORED


async def test_managed_save_then_start(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """managedSave: job_completed(save) and stopped/saved; the next start is started/restored."""
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name)
        await call(dom.managedSave, 0)
        saved = await stream.wait_for(lifecycle(name, "stopped", "saved"))
        job = await stream.wait_for(of("job_completed"))
        assert_job_completed_save(job)
        await stream.wait_for(of("migration_iteration", iteration=1))
        assert job["seq"] < saved["seq"]
        assert await call(dom.hasManagedSaveImage, 0) == 1
        await call(dom.create)
        await stream.wait_for(lifecycle(name, "started", "restored"))


async def test_tunables(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """setSchedulerParameters, pinVcpu and setBlockIoTune each give tunable with its parameters."""
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name)
        await call(dom.setSchedulerParametersFlags, {"cpu_shares": 512}, LIVE)
        shares = await stream.wait_for(of("tunable"))
        assert (shares["name"], shares["detail"]) == ("tunable", None)
        assert shares["payload"] == {"params": {"cputune.cpu_shares": 512}}
        await call(dom.pinVcpu, 0, (True,) + (False,) * (ed.cpu_count() - 1))
        pin = (await collect(stream, of("tunable"), 2))[1]
        assert pin["payload"] == {"params": {"cputune.vcpupin0": "0"}}
        await call(dom.setBlockIoTune, "vda", {"total_iops_sec": 1000}, LIVE)
        tune = (await collect(stream, of("tunable"), 3))[2]
        params = tune["payload"]["params"]
        assert params["blkdeviotune.disk"] == "vda"
        assert params["blkdeviotune.total_iops_sec"] == 1000


async def test_cdrom_change_and_eject_give_tray_change(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """A cdrom media change and an eject via updateDeviceFlags give tray_change open then close."""
    iso = ed.image(name, "cdrom.iso")
    iso.write_bytes(b"\0" * MIB)
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name, Devices(cdrom=""))
        alias = await call(ed.alias_of, dom, ed.CDROM_TARGET)
        tray = of("tray_change", dev_alias=alias)
        await call(dom.updateDeviceFlags, ed.cdrom_xml(str(iso), optional=False), LIVE)
        inserted = await collect(stream, tray, 2)
        assert [(e["name"], e["detail"]) for e in inserted] == [("open", None), ("close", None)]
        assert [e["payload"]["reason_code"] for e in inserted] == [
            libvirt.VIR_DOMAIN_EVENT_TRAY_CHANGE_OPEN, libvirt.VIR_DOMAIN_EVENT_TRAY_CHANGE_CLOSE]
        await call(dom.updateDeviceFlags, ed.cdrom_xml(""), LIVE)
        # libvirt 9.0 opens the tray to remove the medium, then closes the empty drive.
        ejected = (await collect(stream, tray, 4))[2:]
        assert [e["payload"]["reason"] for e in ejected] == ["open", "close"]


async def test_missing_optional_cdrom_gives_disk_change(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """Start with a missing optional cdrom source: disk_change missing_on_start, old path set."""
    missing = ed.image(name, "missing.iso")
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name, Devices(cdrom=str(missing)))
        change = await stream.wait_for(of("disk_change"))
        assert (change["name"], change["detail"]) == ("missing_on_start", None)
        assert change["payload"] == {
            "old_src_path": str(missing),
            "new_src_path": None,
            "dev_alias": await call(ed.alias_of, dom, ed.CDROM_TARGET),
            "reason": "missing_on_start",
            "reason_code": libvirt.VIR_DOMAIN_EVENT_DISK_CHANGE_MISSING_ON_START,
        }


async def test_attach_disk_gives_device_added(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """Hot-plugging a disk gives device_added with the disk's alias."""
    extra = ed.image(name, "vdb.qcow2")
    ed.qemu_img("create", "-q", "-f", "qcow2", str(extra), "16M")
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name, Devices(acpi=True))
        await call(dom.attachDeviceFlags, ed.hotplug_disk_xml(extra, "ua-vdb"), LIVE)
        added = await stream.wait_for(of("device_added"))
        assert (added["name"], added["detail"]) == ("device_added", None)
        assert added["payload"] == {"dev_alias": "ua-vdb"}


async def test_detach_then_reset_gives_device_removed_at_the_reset(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """A detach no guest acknowledges completes at the next reset: device_removed after reboot."""
    extra = ed.image(name, "vdb.qcow2")
    ed.qemu_img("create", "-q", "-f", "qcow2", str(extra), "16M")
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name, Devices(acpi=True))
        await call(dom.attachDeviceFlags, ed.hotplug_disk_xml(extra, "ua-vdb"), LIVE)
        await stream.wait_for(of("device_added"))
        # Asynchronous by contract: returns once QEMU has the unplug request.
        await call(dom.detachDeviceAlias, "ua-vdb", LIVE)
        assert "ua-vdb" in await call(dom.XMLDesc, 0), "removed without a reset"
        await call(dom.reset, 0)
        removed = await stream.wait_for(of("device_removed"))
        assert (removed["name"], removed["detail"]) == ("device_removed", None)
        assert removed["payload"] == {"dev_alias": "ua-vdb"}
        reboot = await stream.wait_for(of("reboot"))
        assert reboot["seq"] < removed["seq"]
        assert "ua-vdb" not in await call(dom.XMLDesc, 0)


async def test_reset_gives_reboot(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """reset gives reboot, with an empty payload."""
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name)
        await call(dom.reset, 0)
        reboot = await stream.wait_for(of("reboot"))
        assert (reboot["name"], reboot["detail"], reboot["payload"]) == ("reboot", None, {})


async def test_active_commit_and_pivot_give_block_job_ready_then_completed(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """Disk-only snapshot, active blockCommit, pivot: block_job and block_job_2 ready, completed."""
    base = ed.image(name, "qcow2")
    top = ed.image(name, "snap.qcow2")
    snapshot = f"""<domainsnapshot><disks>
      <disk name='vda' snapshot='external'><source file='{top}'/></disk>
    </disks></domainsnapshot>"""
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name)
        await call(dom.snapshotCreateXML, snapshot,
                   libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                   | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
                   | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        await call(dom.blockCommit, "vda", None, None, 0,
                   libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)
        ready2 = await stream.wait_for(of("block_job_2", "ready"))
        ready = await stream.wait_for(of("block_job", "ready"))
        await call(dom.blockJobAbort, "vda", libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
        done2 = await stream.wait_for(of("block_job_2", "completed"))
        done = await stream.wait_for(of("block_job", "completed"))
    commit = libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT
    # BLOCK_JOB names the disk by path (the top image until the pivot), BLOCK_JOB_2 by target.
    for event, disk, status, code in (
        (ready2, "vda", "ready", libvirt.VIR_DOMAIN_BLOCK_JOB_READY),
        (ready, str(top), "ready", libvirt.VIR_DOMAIN_BLOCK_JOB_READY),
        (done2, "vda", "completed", libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED),
        (done, str(base), "completed", libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED),
    ):
        assert (event["name"], event["detail"]) == (status, "active_commit")
        assert event["payload"] == {"disk": disk, "type": "active_commit", "type_code": commit,
                                    "status": status, "status_code": code}


async def test_write_past_threshold_gives_block_threshold(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """setBlockThreshold, then a host-side write past it: block_threshold with dev and excess."""
    disk = ed.image(name, "qcow2")
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name)
        await call(dom.setBlockThreshold, "vda", MIB, 0)
        output = await call(ed.host_write, dom, ed.DISK_ALIAS, 0, 2 * MIB)
        assert "error" not in output.lower(), output
        event = await stream.wait_for(of("block_threshold", dev="vda"))
    assert (event["name"], event["detail"]) == ("block_threshold", None)
    payload = event["payload"]
    assert (payload["path"], payload["threshold"]) == (str(disk), MIB)
    # The excess is how far the image's highest written offset went past the threshold.
    assert 0 < payload["excess"] <= disk.stat().st_size - MIB


async def test_lost_backing_store_gives_io_error_and_suspended_ioerror(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """error_policy='stop' on a qemu-nbd backing file; server stopped, reset: IO errors, paused."""
    overlay = ed.image(name, "qcow2")
    with ed.nbd_server(name) as server:
        await call(server.overlay, overlay)
        async with watching(short_tmp, name) as stream:
            dom = await started(lab_conn, stream, name, Devices(error_policy="stop"), overlay)
            await call(ed.wait_first_read, dom)
            await call(server.stop)
            # SeaBIOS reads the boot disk after the reset, through to the vanished backing file.
            await call(dom.reset, 0)
            suspended = await stream.wait_for(lifecycle(name, "suspended", "ioerror"))
            error = await stream.wait_for(of("io_error"))
            reason = await stream.wait_for(of("io_error_reason"))
            state = await call(dom.state)
    assert suspended["payload"]["detail_code"] == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR
    assert state == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR]
    expected = {"src_path": str(overlay), "dev_alias": ed.DISK_ALIAS, "action": "pause",
                "action_code": libvirt.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE}
    assert (error["name"], error["detail"], error["payload"]) == ("io_error", "pause", expected)
    # libvirt sends "enospc" for a full disk and "" for every other error.
    assert (reason["name"], reason["detail"]) == ("io_error_reason", "pause")
    assert reason["payload"] == expected | {"reason": ""}


async def test_vnc_client_gives_graphics_connect_initialize_disconnect(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """A VNC client's connect, RFB handshake and close give graphics with both addresses."""
    async with watching(short_tmp, name) as stream:
        dom = await started(lab_conn, stream, name, Devices(vnc=True))
        port = await call(ed.vnc_port, dom)
        session = await ed.vnc_connect(port)
        try:
            connect = await stream.wait_for(of("graphics", "connect"))
            initialize = await stream.wait_for(of("graphics", "initialize"))
        finally:
            await session.close()
        disconnect = await stream.wait_for(of("graphics", "disconnect"))
    for event, phase in ((connect, "connect"), (initialize, "initialize"),
                         (disconnect, "disconnect")):
        assert (event["name"], event["detail"]) == (phase, None)
        assert event["payload"] == {
            "phase": phase,
            "phase_code": getattr(libvirt, f"VIR_DOMAIN_EVENT_GRAPHICS_{phase.upper()}"),
            "local": {"family": "ipv4", "family_code": 0, "node": "127.0.0.1",
                      "service": str(port)},
            "remote": {"family": "ipv4", "family_code": 0, "node": "127.0.0.1",
                       "service": str(session.local_port)},
            "auth_scheme": "none",
            "subject": [],
        }


async def test_guest_agent_channel_gives_agent_lifecycle_on_start(
    lab_conn: Any, name: str, short_tmp: Path
) -> None:
    """A guest-agent channel gives agent_lifecycle disconnected/domain_started at start."""
    async with watching(short_tmp, name) as stream:
        await started(lab_conn, stream, name, Devices(agent=True))
        agent = await stream.wait_for(of("agent_lifecycle"))
    assert (agent["name"], agent["detail"]) == ("disconnected", "domain_started")
    assert agent["payload"] == {
        "state": "disconnected",
        "state_code": libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED,
        "reason": "domain_started",
        "reason_code": libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_DOMAIN_STARTED,
    }

