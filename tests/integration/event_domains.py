"""Lab domains built to fire the events that need no guest OS, and host-side tools to fire them.

A domain here is the lab's no-OS domain (64 MiB, 1 vCPU, KVM where available) plus only the
devices one event needs: a cdrom, a VNC display, a guest-agent channel, ACPI for PCI hot-unplug,
a disk with an alias (QOM path for HMP ``qemu-io``) or with ``error_policy='stop'``. Every file a
domain uses is named ``IMAGE_DIR/<name>.<suffix>``, so :func:`tests.lab.lab.remove_domain` (which
deletes ``<name>.*``) removes all of it. The facts behind each choice are in shared/docs/LAB.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt_qemu  # type: ignore[import-untyped]

from tests.lab import lab as lab_module

IMAGE_DIR = lab_module.IMAGE_DIR
# The alias of every domain's first disk: user aliases (``ua-``) survive into the live XML, and
# QEMU names the device after it, which gives HMP ``qemu-io`` a QOM path to write through.
DISK_ALIAS = "ua-vda"
CDROM_TARGET = "hdc"


def image(name: str, suffix: str) -> Path:
    """The path of one of a domain's files (removed with the domain by remove_domain)."""
    return IMAGE_DIR / f"{name}.{suffix}"


@dataclass(frozen=True, slots=True)
class Devices:
    """The optional devices of an event domain; the first disk (vda) is always there.

    ``cdrom`` is the cdrom's source file, or ``""`` for an empty drive, or None for no cdrom;
    a source that does not exist is kept optional (``startupPolicy='optional'``).
    """

    acpi: bool = False
    cdrom: str | None = None
    vnc: bool = False
    agent: bool = False
    error_policy: str | None = None


def domain_xml(name: str, kind: str, disk: Path, devices: Devices) -> str:
    """A lab no-OS domain with the requested devices."""
    features = "<features><acpi/></features>" if devices.acpi else ""
    policy = f" error_policy='{devices.error_policy}'" if devices.error_policy else ""
    parts = [f"""    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'{policy}/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
      <alias name='{DISK_ALIAS}'/>
    </disk>"""]
    if devices.cdrom is not None:
        parts.append(cdrom_xml(devices.cdrom))
    if devices.agent:
        parts.append("""    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>""")
    if devices.vnc:
        parts.append("    <graphics type='vnc' autoport='yes' listen='127.0.0.1'/>")
    body = "\n".join(parts)
    return f"""<domain type='{kind}'>
  <name>{name}</name>
  <description>{lab_module.LAB_MARK}</description>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  {features}
  <on_crash>destroy</on_crash>
  <devices>
{body}
  </devices>
</domain>"""


def cdrom_xml(source: str, optional: bool = True) -> str:
    """The IDE cdrom hdc with a source file ("" for an empty drive), optional at start or not."""
    policy = " startupPolicy='optional'" if optional else ""
    source_xml = f"<source file='{source}'{policy}/>" if source else ""
    return f"""    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      {source_xml}
      <target dev='{CDROM_TARGET}' bus='ide'/>
      <readonly/>
    </disk>"""


def hotplug_disk_xml(path: Path, alias: str) -> str:
    """A qcow2 disk on virtio with an alias; the 'pc' machine hot-plugs PCI only with ACPI."""
    return f"""<disk type='file' device='disk'>
  <driver name='qemu' type='qcow2'/>
  <source file='{path}'/>
  <target dev='vdb' bus='virtio'/>
  <alias name='{alias}'/>
</disk>"""


def qemu_img(*args: str) -> None:
    """Run qemu-img quietly; its error message becomes the exception's."""
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(args)}: {done.stderr.strip()}")


def create(conn: Any, name: str, devices: Devices, disk: Path | None = None,
           start: bool = True) -> Any:
    """Define (and start) an event domain; a fresh 64 MiB qcow2 vda unless ``disk`` is given."""
    if disk is None:
        disk = image(name, "qcow2")
        qemu_img("create", "-q", "-f", "qcow2", str(disk), "64M")
    dom = conn.defineXML(domain_xml(name, lab_module.virt_type(conn), disk, devices))
    if start:
        dom.create()
    return dom


def vnc_port(dom: Any) -> int:
    """The TCP port of a running domain's VNC display (autoport), from its live XML."""
    graphics = ET.fromstring(dom.XMLDesc(0)).find("./devices/graphics[@type='vnc']")
    assert graphics is not None, "the domain has no VNC display"
    return int(graphics.attrib["port"])


def hmp(dom: Any, command: str) -> str:
    """One HMP command through libvirt's monitor passthrough (taints the domain; fine here)."""
    return str(libvirt_qemu.qemuMonitorCommand(
        dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP))


def host_write(dom: Any, alias: str, offset: int, length: int) -> str:
    """Write through a virtio disk's block backend from the host, as a guest would."""
    qom = f"/machine/peripheral/{alias}/virtio-backend"
    return hmp(dom, f'qemu-io -d {qom} "write {offset} {length}"')


@contextlib.contextmanager
def nbd_server(name: str, timeout: float = 10.0) -> Iterator[NbdServer]:
    """Serve a fresh 64 MiB image with qemu-nbd on a Unix socket for the body of a ``with``."""
    base = image(name, "base.qcow2")
    socket = image(name, "nbd.sock")
    qemu_img("create", "-q", "-f", "qcow2", str(base), "64M")
    log = image(name, "nbd.log")
    with log.open("wb") as err:
        # --persistent: qemu-img (creating the overlay) and QEMU each connect once.
        process = subprocess.Popen(
            ["qemu-nbd", "--socket", str(socket), "--format", "qcow2", "--persistent",
             "--shared", "4", str(base)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )
    server = NbdServer(process, socket)
    try:
        deadline = time.monotonic() + timeout
        while not socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qemu-nbd did not listen: {log.read_text()!r}")
            time.sleep(0.02)
        # QEMU runs as libvirt-qemu; libvirt does not relabel a network backing file's socket.
        socket.chmod(0o777)
        yield server
    finally:
        server.stop()


@dataclass
class NbdServer:
    """A qemu-nbd process this test started, stopped by its own handle."""

    process: subprocess.Popen[bytes]
    socket: Path

    @property
    def uri(self) -> str:
        """The NBD URI of the export (a qcow2 backing file name)."""
        return f"nbd+unix:///?socket={self.socket}"

    def overlay(self, path: Path) -> Path:
        """A local qcow2 overlay whose backing file is this export (seen as raw)."""
        qemu_img("create", "-q", "-f", "qcow2", "-b", self.uri, "-F", "raw", str(path))
        return path

    def stop(self) -> None:
        """Terminate qemu-nbd and reap it; a second call does nothing."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@dataclass(frozen=True, slots=True)
class VncSession:
    """An RFB client connection that got through the handshake."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    local_port: int

    async def close(self) -> None:
        """Close the connection (QEMU reports the disconnect)."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def vnc_connect(port: int, timeout: float = 10.0) -> VncSession:
    """Connect to a VNC display and complete the RFB 3.8 handshake with no authentication.

    QEMU reports ``connect`` on accept and ``initialize`` once the client's ClientInit arrives.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(timeout):
            version = await reader.readexactly(12)
            assert version.startswith(b"RFB "), version
            writer.write(b"RFB 003.008\n")
            count = (await reader.readexactly(1))[0]
            types = await reader.readexactly(count)
            assert 1 in types, f"VNC security types {list(types)} lack None"
            writer.write(b"\x01")  # security type None
            result = await reader.readexactly(4)
            assert result == b"\x00\x00\x00\x00", f"security result {result!r}"
            writer.write(b"\x01")  # ClientInit, shared
            header = await reader.readexactly(24)  # ServerInit up to the name length
            await reader.readexactly(int.from_bytes(header[20:24], "big"))
    except BaseException:
        writer.close()
        raise
    local_port = writer.get_extra_info("sockname")[1]
    return VncSession(reader, writer, local_port)


def wait_first_read(dom: Any, disk: str = "vda", timeout: float = 20.0) -> None:
    """Wait until SeaBIOS has read the boot disk: its power-on self test is over.

    A reset during the self test can leave the vCPU running zeroed low memory (seen here in
    about one start in four), and then the next boot never reads the disk.
    """
    deadline = time.monotonic() + timeout
    while dom.blockStats(disk)[0] == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no read from {disk} within {timeout} s of the start")
        time.sleep(0.02)


def alias_of(dom: Any, target: str) -> str:
    """The alias libvirt gave the disk with a target name (``hdc`` -> ``ide0-1-0``)."""
    alias = ET.fromstring(dom.XMLDesc(0)).find(f"./devices/disk/target[@dev='{target}']/../alias")
    assert alias is not None, f"no disk {target} with an alias"
    return alias.attrib["name"]


def cpu_count() -> int:
    """Host CPUs, for a pinVcpu map."""
    return os.cpu_count() or 1
