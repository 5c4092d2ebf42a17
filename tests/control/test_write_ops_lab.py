"""Write operations of the control API on the lab: each one's effect read back from libvirt.

Every test calls operations through the Unix socket of a daemon with control.allow_write on
(the ``rw`` fixture of tests/control/conftest.py) and checks what changed with a direct libvirt
read on the test's own connection (``lab_conn``) or with the daemon's own read operation. Files
the tests make live under ``short_tmp``, or in the lab's image directory named after the test's
``t-`` domain (so the domain's removal deletes them too).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.conftest import call
from tests.control.conftest import Env
from tests.lab import lab as lab_module

pytestmark = pytest.mark.lab

CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
MIB = 1024 * 1024


async def _stop(lab_conn: Any, name: str) -> Any:
    """The domain, powered off by the test itself (for operations on an inactive domain)."""
    dom = await call(lab_conn.lookupByName, name)
    await call(dom.destroy)
    return dom


async def _state(env: Env, name: str) -> tuple[str, str]:
    """The domain's state and reason names, from the daemon's domain.state read."""
    doc = await env.call("domain.state", domain=name)
    return doc["state"]["name"], doc["reason"]["name"]


async def _disk_sources(lab_conn: Any, name: str) -> str:
    """The live XML's source and backingStore lines (what a block job changes)."""
    dom = await call(lab_conn.lookupByName, name)
    xml = await call(dom.XMLDesc, 0)
    return "\n".join(line.strip() for line in xml.splitlines()
                     if "<source file=" in line or "<backingStore" in line)


async def _wait_job(env: Env, name: str, *, ready: bool, timeout: float = 20.0) -> dict[str, Any]:
    """Poll domain.block_job_info on vda until the job is ready (cur == end) or gone ({})."""
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = await env.call("domain.block_job_info", domain=name, disk="vda")
        if not info and not ready:
            return info
        if ready and info and info["end"] and info["cur"] == info["end"]:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"block job on {name} not {'ready' if ready else 'gone'}: {info}")
        await asyncio.sleep(0.05)


async def _external_snapshot(env: Env, name: str, overlay: Path) -> None:
    """A disk-only external snapshot of vda (via the API): vda becomes overlay over the old."""
    xml = (f"<domainsnapshot><disks><disk name='vda' snapshot='external'>"
           f"<source file='{overlay}'/></disk></disks></domainsnapshot>")
    await env.call("domain.snapshot_create", domain=name, xml=xml,
                   flags=["disk_only", "no_metadata"])


@contextlib.asynccontextmanager
async def _vnc_domain(lab_conn: Any) -> AsyncIterator[str]:
    """A running lab domain with a VNC display and a VGA card (something to screenshot)."""
    name = f"t-{uuid.uuid4().hex[:8]}-vnc"
    try:
        xml = await call(lab_module.new_domain_xml, lab_conn, name)
        xml = xml.replace("<memballoon", "<graphics type='vnc' autoport='yes' listen='127.0.0.1'/>"
                                         "<video><model type='vga'/></video><memballoon")
        dom = await call(lab_conn.defineXML, xml)
        await call(dom.create)
        yield name
    finally:
        await call(lab_module.remove_domain, lab_conn, name)


async def test_save_and_restore_through_a_file(
        rw: Env, lab_domain: str, lab_conn: Any, short_tmp: Path) -> None:
    """domain.save stops the domain into a file; save_image_xml reads it; restore runs it."""
    path = short_tmp / f"{lab_domain}.save"
    try:
        assert await rw.call("domain.save", domain=lab_domain, path=str(path)) is None
        dom = await call(lab_conn.lookupByName, lab_domain)
        assert await call(dom.state) == [libvirt.VIR_DOMAIN_SHUTOFF,
                                         libvirt.VIR_DOMAIN_SHUTOFF_SAVED]
        assert path.stat().st_size > 0
        xml = await rw.call("domain.save_image_xml", path=str(path))
        assert f"<name>{lab_domain}</name>" in xml
        assert await rw.call("domain.restore", path=str(path)) is None
        assert await call(dom.state) == [libvirt.VIR_DOMAIN_RUNNING,
                                         libvirt.VIR_DOMAIN_RUNNING_RESTORED]
        assert await _state(rw, lab_domain) == ("running", "restored")
    finally:
        path.unlink(missing_ok=True)


async def test_managed_save_start_and_remove(
        rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """managed_save stops into libvirt's image, start resumes it, managed_save_remove drops it."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    assert await rw.call("domain.managed_save", domain=lab_domain) is None
    assert await _state(rw, lab_domain) == ("shutoff", "saved")
    assert await rw.call("domain.has_managed_save", domain=lab_domain) is True
    assert await call(dom.hasManagedSaveImage, 0) == 1
    assert f"<name>{lab_domain}</name>" in await rw.call("domain.managed_save_xml",
                                                         domain=lab_domain)
    assert await rw.call("domain.start", domain=lab_domain) is None
    assert await call(dom.state) == [libvirt.VIR_DOMAIN_RUNNING,
                                     libvirt.VIR_DOMAIN_RUNNING_RESTORED]
    assert await rw.call("domain.has_managed_save", domain=lab_domain) is False
    await rw.call("domain.managed_save", domain=lab_domain)
    assert await rw.call("domain.managed_save_remove", domain=lab_domain) is None
    assert await call(dom.hasManagedSaveImage, 0) == 0
    assert await rw.call("domain.has_managed_save", domain=lab_domain) is False
    await rw.call("domain.start", domain=lab_domain)
    assert await call(dom.state) == [libvirt.VIR_DOMAIN_RUNNING,
                                     libvirt.VIR_DOMAIN_RUNNING_BOOTED]


async def test_core_dump_memory_only(
        rw: Env, lab_domain: str, lab_conn: Any, short_tmp: Path) -> None:
    """core_dump (memory_only, raw) writes an ELF file of guest memory; the domain runs on."""
    path = short_tmp / f"{lab_domain}.core"
    try:
        assert await rw.call("domain.core_dump", domain=lab_domain, path=str(path),
                             format="raw", flags=["memory_only"]) is None
        with path.open("rb") as dump:
            assert dump.read(4) == b"\x7fELF"
        assert path.stat().st_size >= 64 * MIB  # all of the guest's 64 MiB
        dom = await call(lab_conn.lookupByName, lab_domain)
        assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        path.unlink(missing_ok=True)


async def test_memory_and_vcpus_in_the_config_of_a_shut_off_domain(
        rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """set_max_memory, set_memory (config) and set_vcpus (config, maximum) change the definition."""
    dom = await _stop(lab_conn, lab_domain)
    assert await rw.call("domain.set_max_memory", domain=lab_domain, memory_kib=131072) is None
    assert await rw.call("domain.set_memory", domain=lab_domain, memory_kib=98304,
                         flags=["config"]) is None
    assert (await call(dom.info))[1:3] == [131072, 98304]
    assert await rw.call("domain.max_memory", domain=lab_domain) == 131072
    assert await rw.call("domain.set_vcpus", domain=lab_domain, count=2,
                         flags=["config", "maximum"]) is None
    assert await rw.call("domain.set_vcpus", domain=lab_domain, count=2, flags="config") is None
    assert await call(dom.vcpusFlags, CONFIG) == 2
    assert await call(dom.vcpusFlags, CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM) == 2
    assert await rw.call("domain.vcpus_count", domain=lab_domain, flags=["config"]) == 2
    # Started, it has them (no guest balloon driver: the live memory stays at the maximum).
    await rw.call("domain.start", domain=lab_domain)
    assert await call(dom.maxMemory) == 131072
    assert await call(dom.vcpusFlags, libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2


TUNABLES = [
    # (read operation, write operation, parameters, libvirt getter)
    ("domain.scheduler_parameters", "domain.set_scheduler_parameters", {"cpu_shares": 512},
     "schedulerParametersFlags"),
    ("domain.memory_parameters", "domain.set_memory_parameters", {"soft_limit": 100000},
     "memoryParameters"),
]


@pytest.mark.parametrize(("read", "write", "params", "getter"), TUNABLES,
                         ids=[t[1].removeprefix("domain.") for t in TUNABLES])
async def test_typed_parameters_live(rw: Env, lab_domain: str, lab_conn: Any,
                                     read: str, write: str, params: dict[str, int],
                                     getter: str) -> None:
    """Typed parameters as a JSON object set the running domain's tunable; both reads agree."""
    before = await rw.call(read, domain=lab_domain)
    assert set(params) <= set(before) and all(before[k] != v for k, v in params.items())
    assert await rw.call(write, domain=lab_domain, params=params, flags=["live"]) is None
    dom = await call(lab_conn.lookupByName, lab_domain)
    direct = await call(getattr(dom, getter), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    after = await rw.call(read, domain=lab_domain, flags="live")
    for key, value in params.items():
        assert direct[key] == after[key] == value, (key, direct, after)


def blkio_weight_file(domain: str) -> Path | None:
    """The cgroup file libvirt writes a blkio weight to for this QEMU process, or None where the
    host has none: libvirt needs the bfq (or the old cfq) I/O scheduler's weight file, and
    otherwise refuses ("valid only for bfq or cfq scheduler")."""
    pid = int(Path(f"/run/libvirt/qemu/{domain}.pid").read_text())
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    v1 = [line.split(":", 2)[2] for line in lines if line.split(":", 2)[1] == "blkio"]
    if v1:
        base, names = Path("/sys/fs/cgroup/blkio") / v1[0].lstrip("/"), ("blkio.bfq.weight",
                                                                          "blkio.weight")
    else:
        unified = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
        base, names = Path("/sys/fs/cgroup") / unified[0].lstrip("/"), ("io.bfq.weight",
                                                                        "io.weight")
    # The weight sits on the domain's own cgroup, above its emulator/vcpu children.
    for directory in (base, *base.parents):
        for name in names:
            if (directory / name).exists():
                return directory / name
        if directory.name.endswith(".libvirt-qemu"):
            break
    return None


async def test_blkio_weight_takes_the_branch_the_host_offers(
        rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """set_blkio_parameters: where the host has a blkio weight (bfq/cfq) the new weight is read
    back; where it has none, a 4xx problem carries libvirt's error and nothing changes."""
    weight_file = await asyncio.to_thread(blkio_weight_file, lab_domain)
    dom = await call(lab_conn.lookupByName, lab_domain)
    if weight_file is not None:
        print(f"branch: this host has {weight_file.name}; the weight is set and read back")
        before = await rw.call("domain.blkio_parameters", domain=lab_domain, flags="live")
        new = 300 if before["weight"] != 300 else 400
        assert await rw.call("domain.set_blkio_parameters", domain=lab_domain,
                             params={"weight": new}, flags=["live"]) is None
        direct = await call(dom.blkioParameters, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        after = await rw.call("domain.blkio_parameters", domain=lab_domain, flags="live")
        assert direct["weight"] == after["weight"] == new
        assert int(weight_file.read_text().split()[-1]) == new
        return
    print("branch: this host has no bfq/cfq weight; libvirt's refusal is passed on")
    xml_before = await call(dom.XMLDesc, 0)
    for operation, args in (("domain.set_blkio_parameters", {"params": {"weight": 300}}),
                            ("domain.blkio_parameters", {})):
        problem = await rw.problem(operation, domain=lab_domain, flags=["live"], **args)
        assert 400 <= problem.status < 500, problem.document
        assert problem.document["libvirt_code"] == libvirt.VIR_ERR_OPERATION_INVALID
        assert "bfq or cfq" in problem.detail
    # Nothing changed: the live definition has the same <blkiotune> (or none) as before.
    assert _blkiotune(await call(dom.XMLDesc, 0)) == _blkiotune(xml_before)


def _blkiotune(xml: str) -> str:
    start = xml.find("<blkiotune>")
    return "" if start < 0 else xml[start:xml.index("</blkiotune>", start)]


async def test_memory_parameters_in_the_config(
        rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """set_memory_parameters with flags config writes <memtune> into the inactive definition."""
    dom = await _stop(lab_conn, lab_domain)
    assert await rw.call("domain.set_memory_parameters", domain=lab_domain,
                         params={"hard_limit": 262144}, flags=["config"]) is None
    assert (await call(dom.memoryParameters, CONFIG))["hard_limit"] == 262144
    xml = await call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<hard_limit unit='KiB'>262144</hard_limit>" in xml


async def test_set_autostart(rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """set_autostart true/false flips libvirt's autostart flag; domain.autostart reads it."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    try:
        assert await rw.call("domain.set_autostart", domain=lab_domain, autostart=True) is None
        assert await call(dom.autostart) == 1
        assert await rw.call("domain.autostart", domain=lab_domain) is True
        assert await rw.call("domain.set_autostart", domain=lab_domain, autostart="false") is None
        assert await call(dom.autostart) == 0
        assert await rw.call("domain.autostart", domain=lab_domain) is False
    finally:
        await call(dom.setAutostart, 0)


async def test_rename_a_shut_off_domain(
        rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """rename moves a shut-off domain to a new name (same UUID) and back; the old name is gone."""
    dom = await _stop(lab_conn, lab_domain)
    uuid_string = await call(dom.UUIDString)
    new_name = f"{lab_domain}-renamed"
    try:
        assert await rw.call("domain.rename", domain=lab_domain, new_name=new_name) is None
        renamed = await call(lab_conn.lookupByName, new_name)
        assert await call(renamed.UUIDString) == uuid_string
        with pytest.raises(libvirt.libvirtError) as caught:
            await call(lab_conn.lookupByName, lab_domain)
        assert caught.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
        assert (await rw.call("domain.lookup", domain=uuid_string))["name"] == new_name
        assert await rw.call("domain.rename", domain=new_name, new_name=lab_domain) is None
        assert await call(lab_conn.lookupByName, lab_domain) is not None
    finally:
        await call(lab_module.remove_domain, lab_conn, new_name)


async def test_rename_a_running_domain_is_409(rw: Env, lab_domain: str) -> None:
    """rename of a running domain is refused as 409 VIR_ERR_OPERATION_INVALID."""
    problem = await rw.problem("domain.rename", domain=lab_domain, new_name=f"{lab_domain}-x")
    assert problem.status == 409
    assert problem.document["libvirt_code"] == libvirt.VIR_ERR_OPERATION_INVALID


async def test_block_resize(rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """block_resize grows vda (KiB, then bytes with the bytes flag); block_info shows it."""
    assert await rw.call("domain.block_resize", domain=lab_domain, disk="vda",
                         size=128 * 1024) is None
    dom = await call(lab_conn.lookupByName, lab_domain)
    assert (await call(dom.blockInfo, "vda", 0))[0] == 128 * MIB
    assert await rw.call("domain.block_resize", domain=lab_domain, disk="vda",
                         size=192 * MIB, flags=["bytes"]) is None
    assert (await call(dom.blockInfo, "vda", 0))[0] == 192 * MIB
    assert (await rw.call("domain.block_info", domain=lab_domain,
                          disk="vda"))["capacity"] == 192 * MIB


async def test_block_copy_speed_and_pivot(
        rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """block_copy mirrors vda to a new file; block_job_set_speed and pivot act; info is {} after."""
    copy = lab_module.IMAGE_DIR / f"{lab_domain}.copy.qcow2"
    dest = f"<disk type='file'><driver type='qcow2'/><source file='{copy}'/></disk>"
    try:
        assert await rw.call("domain.block_copy", domain=lab_domain, disk="vda", xml=dest,
                             flags=["transient_job"]) is None
        info = await _wait_job(rw, lab_domain, ready=True)
        assert info["type"] == libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY
        assert await rw.call("domain.block_job_set_speed", domain=lab_domain, disk="vda",
                             bandwidth=5) is None
        dom = await call(lab_conn.lookupByName, lab_domain)
        assert (await call(dom.blockJobInfo, "vda", 0))["bandwidth"] == 5
        assert await rw.call("domain.block_job_abort", domain=lab_domain, disk="vda",
                             flags=["pivot"]) is None
        await _wait_job(rw, lab_domain, ready=False)
        assert f"<source file='{copy}'" in await _disk_sources(lab_conn, lab_domain)
    finally:
        copy.unlink(missing_ok=True)


async def test_block_commit_active_and_block_pull(
        rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """block_commit (active, pivot) folds an overlay back; block_pull flattens a new overlay."""
    base = lab_module.IMAGE_DIR / f"{lab_domain}.qcow2"
    first = lab_module.IMAGE_DIR / f"{lab_domain}.snap1.qcow2"
    second = lab_module.IMAGE_DIR / f"{lab_domain}.snap2.qcow2"
    try:
        await _external_snapshot(rw, lab_domain, first)
        sources = await _disk_sources(lab_conn, lab_domain)
        assert f"<source file='{first}'" in sources and f"<source file='{base}'" in sources
        assert await rw.call("domain.block_commit", domain=lab_domain, disk="vda",
                             flags=["active"]) is None
        info = await _wait_job(rw, lab_domain, ready=True)
        assert info["type"] == libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT
        await rw.call("domain.block_job_abort", domain=lab_domain, disk="vda", flags="pivot")
        await _wait_job(rw, lab_domain, ready=False)
        sources = await _disk_sources(lab_conn, lab_domain)
        assert f"<source file='{base}'" in sources and str(first) not in sources

        await _external_snapshot(rw, lab_domain, second)
        assert await rw.call("domain.block_pull", domain=lab_domain, disk="vda") is None
        await _wait_job(rw, lab_domain, ready=False)
        sources = await _disk_sources(lab_conn, lab_domain)
        assert f"<source file='{second}'" in sources and str(base) not in sources
        assert "<backingStore/>" in sources
    finally:
        for path in (first, second):
            path.unlink(missing_ok=True)


async def test_interface_bandwidth_in_the_config(
        rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """set_interface_parameters (config, by MAC) writes <bandwidth>; interface_parameters agrees."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    xml = await call(dom.XMLDesc, 0)
    mac = xml.split("<mac address='", 1)[1].split("'", 1)[0]
    params = {"inbound.average": 1000, "outbound.average": 2000}
    assert await rw.call("domain.set_interface_parameters", domain=lab_domain, device=mac,
                         params=params, flags=["config"]) is None
    direct = await call(dom.interfaceParameters, mac, CONFIG)
    read = await rw.call("domain.interface_parameters", domain=lab_domain, device=mac,
                         flags="config")
    for key, value in params.items():
        assert direct[key] == read[key] == value
    inactive = await call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<inbound average='1000'/>" in inactive and "<outbound average='2000'/>" in inactive


async def test_guest_agent_operations_without_an_agent(
        rw: Env, lab_domain: str) -> None:
    """Guest-agent writes (and the time read) on a domain with no agent channel: 400, code 74."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("domain.set_time", {"flags": ["sync"]}),
        ("domain.set_time", {"seconds": 1_700_000_000, "nseconds": 5}),
        ("domain.set_user_password", {"user": "root", "password": "secret"}),
        ("domain.fs_freeze", {}),
        ("domain.fs_trim", {}),
        ("domain.time", {}),
    ]
    for name, args in calls:
        problem = await rw.problem(name, domain=lab_domain, **args)
        assert problem.status == 400, (name, problem.document)
        assert problem.document["libvirt_code"] == libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED
        assert problem.document["libvirt_error"] == "VIR_ERR_ARGUMENT_UNSUPPORTED"
        assert "guest agent" in problem.detail, (name, problem.detail)


async def test_screenshot(rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """screenshot of a VNC domain is a base64 PNG; a domain with no display is 409."""
    async with _vnc_domain(lab_conn) as name:
        shot = await rw.call("domain.screenshot", domain=name)
        data = base64.b64decode(shot["base64"])
        assert shot["mime_type"] == "image/png" and shot["size"] == len(data) > 0
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    problem = await rw.problem("domain.screenshot", domain=lab_domain)
    assert problem.status == 409
    assert problem.document["libvirt_code"] == libvirt.VIR_ERR_OPERATION_INVALID


async def test_save_paused_edit_the_image_and_restore(
        rw: Env, lab_domain: str, lab_conn: Any, short_tmp: Path) -> None:
    """save (paused), save_image_define_xml, restore: the domain comes back paused and edited."""
    path = short_tmp / f"{lab_domain}.save"
    try:
        await rw.call("domain.save", domain=lab_domain, path=str(path), flags=["paused"])
        xml = await rw.call("domain.save_image_xml", path=str(path))
        edited = xml.replace("</description>", "</description><title>from the image</title>")
        assert await rw.call("domain.save_image_define_xml", path=str(path), xml=edited) is None
        assert "<title>from the image</title>" in await rw.call("domain.save_image_xml",
                                                                path=str(path))
        await rw.call("domain.restore", path=str(path))
        dom = await call(lab_conn.lookupByName, lab_domain)
        assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_PAUSED
        assert "<title>from the image</title>" in await call(dom.XMLDesc, 0)
    finally:
        path.unlink(missing_ok=True)


async def test_create_xml_starts_a_transient_domain(
        rw: Env, lab_conn: Any) -> None:
    """create_xml starts a transient domain (paused flag); destroying it makes it vanish."""
    name = f"t-{uuid.uuid4().hex[:8]}-transient"
    try:
        xml = await call(lab_module.new_domain_xml, lab_conn, name)
        created = await rw.call("domain.create_xml", xml=xml, flags=["paused"])
        assert created["name"] == name
        dom = await call(lab_conn.lookupByName, name)
        assert await call(dom.isPersistent) == 0
        assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_PAUSED
        await rw.call("domain.destroy", domain=name)
        missing = await rw.problem("domain.info", domain=name)
        assert missing.status == 404
    finally:
        await call(lab_module.remove_domain, lab_conn, name)


async def test_backup_begin_push_to_a_file(
        rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """backup_begin (push mode) writes vda to a qcow2 file; job_stats reports it completed."""
    target = lab_module.IMAGE_DIR / f"{lab_domain}.backup.qcow2"
    xml = (f"<domainbackup><disks><disk name='vda' type='file'><target file='{target}'/>"
           f"<driver type='qcow2'/></disk></disks></domainbackup>")
    try:
        assert await rw.call("domain.backup_begin", domain=lab_domain, xml=xml) is None
        deadline = time.monotonic() + 20
        while True:
            stats = await rw.call("domain.job_stats", domain=lab_domain, flags=["completed"])
            if stats.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED:
                break
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.05)
        assert stats["operation"] == libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP
        assert stats["success"] is True and stats["disk_processed"] == 64 * MIB
        with target.open("rb") as image:
            assert image.read(4) == b"QFI\xfb"  # a qcow2 header
    finally:
        target.unlink(missing_ok=True)


async def test_pinning_and_iothreads(rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """pin_vcpu, pin_emulator, add/pin/del_iothread change the live affinity libvirt reports."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE
    assert await rw.call("domain.pin_vcpu", domain=lab_domain, vcpu=0, cpus=[0]) is None
    (vcpu0,) = await call(dom.vcpuPinInfo, live)
    assert vcpu0[0] and vcpu0.count(True) == 1
    assert await rw.call("domain.vcpu_pin_info", domain=lab_domain) == [[0]]
    assert await rw.call("domain.pin_emulator", domain=lab_domain, cpus=[0]) is None
    assert (await call(dom.emulatorPinInfo, live)).count(True) == 1
    assert await rw.call("domain.emulator_pin_info", domain=lab_domain) == [0]
    assert await rw.call("domain.add_iothread", domain=lab_domain, iothread=3,
                         flags=["live"]) is None
    assert await rw.call("domain.pin_iothread", domain=lab_domain, iothread=3, cpus=[0],
                         flags=["live"]) is None
    threads = dict(await call(dom.ioThreadInfo, live))
    assert 3 in threads and threads[3].count(True) == 1 and threads[3][0]
    assert await rw.call("domain.del_iothread", domain=lab_domain, iothread=3,
                         flags="live") is None
    assert await call(dom.ioThreadInfo, live) == []


async def test_block_iotune(rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """set_block_iotune throttles vda live; libvirt and domain.block_iotune read it back."""
    params = {"total_bytes_sec": 10 * MIB, "write_iops_sec": 500}
    assert await rw.call("domain.set_block_iotune", domain=lab_domain, disk="vda",
                         params=params, flags=["live"]) is None
    dom = await call(lab_conn.lookupByName, lab_domain)
    direct = await call(dom.blockIoTune, "vda", libvirt.VIR_DOMAIN_AFFECT_LIVE)
    read = await rw.call("domain.block_iotune", domain=lab_domain, disk="vda")
    for key, value in params.items():
        assert direct[key] == read[key] == value


async def test_migration_tunables(rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """migrate_set_max_speed/_max_downtime/_compression_cache: libvirt and the reads agree."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    await rw.call("domain.migrate_set_max_speed", domain=lab_domain, bandwidth=100)
    assert await call(dom.migrateGetMaxSpeed, 0) == 100
    assert await rw.call("domain.migrate_max_speed", domain=lab_domain) == 100
    await rw.call("domain.migrate_set_max_downtime", domain=lab_domain, downtime_ms=500)
    assert await call(dom.migrateGetMaxDowntime, 0) == 500
    assert await rw.call("domain.migrate_max_downtime", domain=lab_domain) == 500
    await rw.call("domain.migrate_set_compression_cache", domain=lab_domain, size=64 * MIB)
    assert await call(dom.migrateGetCompressionCache, 0) == 64 * MIB
    assert await rw.call("domain.migrate_compression_cache", domain=lab_domain) == 64 * MIB


async def test_device_and_lifecycle_action_in_the_config(
        rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """attach_device/detach_device (config) and set_lifecycle_action edit the inactive XML."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    device = "<controller type='usb' index='1' model='ich9-ehci1'/>"
    inactive = libvirt.VIR_DOMAIN_XML_INACTIVE
    assert await rw.call("domain.attach_device", domain=lab_domain, xml=device,
                         flags=["config"]) is None
    assert "model='ich9-ehci1'" in await call(dom.XMLDesc, inactive)
    assert "model='ich9-ehci1'" not in await call(dom.XMLDesc, 0)
    assert await rw.call("domain.detach_device", domain=lab_domain, xml=device,
                         flags=["config"]) is None
    assert "model='ich9-ehci1'" not in await call(dom.XMLDesc, inactive)
    assert await rw.call("domain.set_lifecycle_action", domain=lab_domain, type="crash",
                         action="restart", flags=["config"]) is None
    assert "<on_crash>restart</on_crash>" in await call(dom.XMLDesc, inactive)


UNKNOWN_TYPED = ["domain.set_scheduler_parameters", "domain.set_memory_parameters",
                 "domain.set_numa_parameters", "domain.set_interface_parameters",
                 "domain.set_perf_events", "host.set_memory_parameters"]


@pytest.mark.parametrize("operation", UNKNOWN_TYPED)
async def test_an_unknown_typed_parameter_is_a_400_naming_it(
        rw: Env, lab_domain: str, lab_conn: Any, operation: str) -> None:
    """libvirt-python's LookupError for a typed-parameter name libvirt does not offer is a 400
    problem naming the argument and the name (it was a 500 with a traceback)."""
    args: dict[str, Any] = {"params": {"no_such_tunable": 1}}
    if operation.startswith("domain."):
        args["domain"] = lab_domain
    if operation == "domain.set_interface_parameters":
        dom = await call(lab_conn.lookupByName, lab_domain)
        xml = await call(dom.XMLDesc, 0)
        args["device"] = xml.split("<target dev='", 2)[2].split("'", 1)[0]  # after the disk's
        assert args["device"].startswith("vl"), args
    problem = await rw.problem(operation, **args)
    assert problem.status == 400, problem.document
    assert problem.document["key"] == "params" and "no_such_tunable" in problem.detail


async def test_checkpoint_create_list_delete(rw: Env, lab_domain: str, lab_conn: Any) -> None:
    """domain.checkpoint_create makes a checkpoint libvirt lists; checkpoint_delete removes it;
    deleting it again is libvirt's 404."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    made = await rw.call("domain.checkpoint_create", domain=lab_domain,
                         xml="<domaincheckpoint><name>c1</name></domaincheckpoint>")
    assert made == {"name": "c1"}
    assert [c.getName() for c in await call(dom.listAllCheckpoints, 0)] == ["c1"]
    assert await rw.call("domain.checkpoint_delete", domain=lab_domain, checkpoint="c1") is None
    assert await call(dom.listAllCheckpoints, 0) == []
    assert (await rw.call("domain.checkpoints", domain=lab_domain)) == {"checkpoints": []}
    again = await rw.problem("domain.checkpoint_delete", domain=lab_domain, checkpoint="c1")
    assert again.status == 404
    assert again.document["libvirt_code"] == libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT


async def test_save_and_restore_in_the_params_form(
        rw: Env, lab_domain: str, lab_conn: Any, short_tmp: Path) -> None:
    """save and restore with ``params`` call virDomainSaveParams/RestoreParams: a ``dxml``
    given only as a typed parameter reaches the image and then the restored domain."""
    path = short_tmp / f"{lab_domain}.save"
    dom = await call(lab_conn.lookupByName, lab_domain)
    live = await call(dom.XMLDesc, libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    saved = live.replace("</description>", "</description><title>saved by params</title>")
    try:
        assert await rw.call("domain.save", domain=lab_domain, path=str(path),
                             params={"dxml": saved}) is None
        image = await rw.call("domain.save_image_xml", path=str(path))
        assert "<title>saved by params</title>" in image
        restored = image.replace("saved by params", "restored by params")
        assert await rw.call("domain.restore", path=str(path), params={"dxml": restored},
                             flags=["paused"]) is None
        dom = await call(lab_conn.lookupByName, lab_domain)
        assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_PAUSED
        assert "<title>restored by params</title>" in await call(dom.XMLDesc, 0)
    finally:
        path.unlink(missing_ok=True)


async def test_domain_capabilities_passes_its_flags(rw: Env) -> None:
    """host.domain_capabilities hands its flags to libvirt: an unknown bit is libvirt's own
    refusal naming it, not silently dropped; none gives the XML."""
    assert "<domainCapabilities" in await rw.call("host.domain_capabilities")
    problem = await rw.problem("host.domain_capabilities", flags=1 << 30)
    assert problem.status == 400 and "0x40000000" in problem.detail, problem.document
