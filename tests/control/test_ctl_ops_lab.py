"""virtmonctl's operation commands against a daemon on the lab (main() in a worker thread)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.admin.conftest import virt_admin_table
from tests.conftest import call, daemon_config, running_daemon
from tests.lab import lab as lab_module
from tests.test_ctl import Run, ctl_async
from virtmon.ctl import format as ctl_format
from virtmon.ctl import problems
from virtmon.ctl.client import ControlClient, Problem

pytestmark = pytest.mark.lab


@pytest.fixture
async def sock(short_tmp: Path, lab: str) -> AsyncIterator[Path]:
    """The control socket of a daemon on the lab with writes allowed."""
    cfg = daemon_config(short_tmp, libvirt={"uri": lab}, control={"allow_write": True})
    async with running_daemon(cfg):
        yield short_tmp / "control.sock"


async def ok(sock: Path, *argv: str) -> Run:
    """A virtmonctl run that must exit 0."""
    run = await ctl_async(sock, *argv)
    assert run.code == problems.EX_OK, (argv, run.err)
    return run


async def test_call_generic_and_object_operation_forms(sock: Path, lab_domain: str) -> None:
    """`call domain.info domain=X` and `call domain info domain=X` give the same JSON."""
    first = await ok(sock, "--json", "call", "domain.info", f"domain={lab_domain}")
    second = await ok(sock, "--json", "call", "domain", "info", f"domain={lab_domain}")
    assert json.loads(first.out)["state"]["name"] == "running"
    assert json.loads(first.out).keys() == json.loads(second.out).keys()
    xml = await ok(sock, "call", "domain.xml", f"domain={lab_domain}", "flags=inactive,secure")
    assert f"<name>{lab_domain}</name>" in xml.out


async def test_lifecycle_verbs(sock: Path, lab_domain: str, lab_conn: Any) -> None:
    """`domain suspend NAME`, `resume NAME`, `destroy`, `start` change the real domain."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    await ok(sock, "domain", "suspend", lab_domain)
    assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_PAUSED
    run = await ok(sock, "resume", lab_domain)
    assert run.out == f"{lab_domain}: resume done\n"
    assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_RUNNING
    await ok(sock, "domain", "destroy", lab_domain)
    assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_SHUTOFF
    await ok(sock, "start", lab_domain)
    assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_RUNNING
    await ok(sock, "reboot", lab_domain, "flags=acpi_power_btn")


async def test_failed_operation_exits_1_with_the_libvirt_message(
        sock: Path, lab_domain: str) -> None:
    """Resuming a running domain: exit 1 and libvirt's error on stderr."""
    run = await ctl_async(sock, "resume", lab_domain)
    assert run.code == problems.EX_FAILED
    assert run.err.startswith("virtmonctl: VIR_ERR_OPERATION_INVALID: ")


async def test_usage_errors_exit_2(sock: Path) -> None:
    """A KEY=VALUE without '=', an unknown verb, or an unreadable @FILE: exit 2."""
    assert (await ctl_async(sock, "call", "host.info", "oops")).code == problems.EX_USAGE
    assert (await ctl_async(sock, "domain", "fly", "x")).code == problems.EX_USAGE
    run = await ctl_async(sock, "call", "domain.define", "xml=@/nonexistent/file.xml")
    assert run.code == problems.EX_USAGE and "cannot read" in run.err


async def test_cannot_connect_exits_3(short_tmp: Path) -> None:
    """No daemon at the socket: exit 3."""
    run = await ctl_async(short_tmp / "nothing.sock", "host")
    assert run.code == problems.EX_UNREACHABLE == 3


async def test_host_interfaces_operations(sock: Path) -> None:
    """`host` shows node info, `host lib-version` works, `interfaces` and `operations` print."""
    host = await ok(sock, "host")
    assert any(line.startswith("cpus ") for line in host.lines())
    await ok(sock, "host", "lib-version")
    interfaces = await ok(sock, "interfaces")
    assert interfaces.lines()[0].split() == ["NAME", "MAC", "ACTIVE"]
    ops = await ok(sock, "operations")
    assert any(line.startswith("domain.suspend ") for line in ops.lines())


async def test_admin_commands(sock: Path) -> None:
    """admin servers, threadpool get/set (seen by virt-admin), clients, limits, logging."""
    servers = await ok(sock, "admin", "servers")
    assert "libvirtd" in servers.out
    before = json.loads((await ok(sock, "--json", "admin", "threadpool", "get")).out)
    try:
        await ok(sock, "admin", "threadpool", "set", f"maxWorkers={before['maxWorkers'] + 2}")
        shown = virt_admin_table("srv-threadpool-info", "libvirtd")
        assert shown["maxWorkers"] == str(before["maxWorkers"] + 2)
    finally:
        await ok(sock, "admin", "threadpool", "set", f"maxWorkers={before['maxWorkers']}")
    clients = await ok(sock, "admin", "clients")
    assert clients.lines()[0].split()[:3] == ["ID", "TIMESTAMP", "TRANSPORT"]
    first_id = clients.lines()[1].split()[0]
    info = json.loads((await ok(sock, "--json", "admin", "clients", "info", first_id)).out)
    assert "readonly" in info
    limits = json.loads((await ok(sock, "--json", "admin", "limits")).out)
    assert "nclients_max" in limits
    logging = json.loads((await ok(sock, "--json", "admin", "logging", "get")).out)
    assert set(logging) == {"filters", "outputs"}
    assert (await ctl_async(sock, "admin", "clients", "info")).code == problems.EX_USAGE


async def test_memory_peek_as_json_as_raw_bytes_and_to_a_file(
    sock: Path, lab_domain: str, lab_conn: Any, short_tmp: Path
) -> None:
    """domain.memory_peek of the BIOS ROM: base64 in JSON, the bytes when asked, and
    `call --output FILE`, all equal to libvirt's own memoryPeek."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    client = ControlClient(str(sock))
    arguments = {"domain": lab_domain, "start": 0xF0000, "size": 256, "flags": ["physical"]}
    deadline = time.monotonic() + 30
    while True:  # the BIOS sets its area up in a young domain: wait until it holds for 1 s
        direct = await call(dom.memoryPeek, 0xF0000, 256, libvirt.VIR_MEMORY_PHYSICAL)
        await asyncio.sleep(1)
        doc = await asyncio.to_thread(client.call, "domain.memory_peek", **arguments)
        after = await call(dom.memoryPeek, 0xF0000, 256, libvirt.VIR_MEMORY_PHYSICAL)
        if direct == after == base64.b64decode(doc["base64"]) and any(direct):
            break
        assert time.monotonic() < deadline, "the BIOS area never settled"
    assert doc["size"] == 256
    raw = await asyncio.to_thread(client.call_bytes, "domain.memory_peek", **arguments)
    assert raw == direct
    with pytest.raises(Problem) as refused_early:  # refused before it runs
        await asyncio.to_thread(client.call_bytes, "domain.destroy", domain=lab_domain)
    assert refused_early.value.status == 406
    assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_RUNNING
    out = short_tmp / "rom.bin"
    run = await ok(sock, "call", "domain.memory_peek", f"domain={lab_domain}",
                   f"start={0xF0000}", "size=256", "flags=physical", "--output", str(out))
    assert out.read_bytes() == direct and "256 bytes written" in run.out
    refused = await ctl_async(sock, "call", "domain.info", f"domain={lab_domain}",
                              "--output", str(out))
    assert refused.code == problems.EX_USAGE and "does not return bytes" in refused.err


async def test_define_set_memory_set_vcpus_shutdown_and_undefine_verbs(
    sock: Path, lab_conn: Any
) -> None:
    """`define FILE`, `set-memory --config`, `set-vcpus --config --maximum`, `set-vcpus
    --config`, `start`, `shutdown`, `destroy` and `undefine` act on a real domain."""
    name = f"t-ctl-{uuid.uuid4().hex[:8]}"
    xml_file = lab_module.IMAGE_DIR / f"{name}.xml"
    try:
        xml_file.write_text(await call(lab_module.new_domain_xml, lab_conn, name))
        await ok(sock, "define", str(xml_file))
        dom = await call(lab_conn.lookupByName, name)
        await ok(sock, "set-memory", name, "49152", "--config")
        await ok(sock, "set-vcpus", name, "2", "--config", "--maximum")
        await ok(sock, "set-vcpus", name, "2", "--config")
        assert (await call(dom.info))[2] == 49152
        assert await call(dom.vcpusFlags, libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 2
        await ok(sock, "start", name)
        assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_RUNNING
        # No guest OS answers the ACPI request: libvirt accepts it and the domain runs on.
        assert (await ok(sock, "shutdown", name, "flags=acpi_power_btn")).out == \
            f"{name}: shutdown done\n"
        await ok(sock, "destroy", name)
        await ok(sock, "undefine", name)
        with pytest.raises(libvirt.libvirtError):
            await call(lab_conn.lookupByName, name)
    finally:
        await call(lab_module.remove_domain, lab_conn, name)



async def test_domain_view_of_a_real_domain(sock: Path, lab_domain: str, lab_conn: Any) -> None:
    """`domain NAME` on a KVM domain shows what virsh dominfo shows: OS type hvm, the state
    with its reason by name, vCPUs, memory in binary units and CPU time with a unit."""
    dom = await call(lab_conn.lookupByName, lab_domain)
    state, max_kib, _mem, vcpus, _cpu = await call(dom.info)
    run = await ok(sock, "domain", lab_domain)
    shown = dict(line.split(None, 1) for line in run.lines())
    assert shown["os_type"] == "hvm" and shown["vcpus"] == str(vcpus)
    assert state == libvirt.VIR_DOMAIN_RUNNING and shown["state"].startswith("running (")
    assert shown["max_memory"].endswith(("KiB", "MiB", "GiB"))
    assert shown["max_memory"] == ctl_format.human_bytes(max_kib * 1024)
    assert shown["cpu_time"].split()[-1][-1] in "smhd"
    vcpu_table = await ok(sock, "call", "domain.vcpus", f"domain={lab_domain}")
    assert vcpu_table.lines()[0].split() == ["NUMBER", "STATE", "CPU_TIME", "CPU", "AFFINITY"]
