"""The lab's tiny Linux guest: Debian's kernel and an initramfs built here, booted directly.

The kernel comes from the ``.deb`` that Debian's ``linux-image-amd64`` depends on, downloaded (not
installed) and unpacked into a scratch directory; the generic flavour has the i6300esb watchdog
driver, the cloud one has not. The initramfs is written here (cpio ``newc`` and gzip, in Python):
busybox-static as init and shell, qemu-ga with the shared libraries ``ldd`` lists, the kernel
modules for the devices the guest uses in dependency order (read from each module's
``.modinfo``: the package ships no ``modules.dep``), and the scripts in :data:`FILES`.

The guest, once booted, runs qemu-ga on the ``org.qemu.guest_agent.0`` port, a root shell on
ttyS0 (the domain's console), an echo of every byte on the :data:`ECHO_CHANNEL` port, busybox
acpid (the ACPI power button powers it off) and, on request (``watchdog-ctl``), busybox's watchdog
daemon on the i6300esb. It mounts its data disk (ext4, made on the host) at :data:`DATA_MOUNT`
and gives its virtio NIC a static address, so the agent has a file system and an address to
report. A test drives it through the agent (``guest-exec``).

The result is cached under :data:`GUEST_DIR`, in a directory named by a digest of the package
versions and of this file, so a new kernel or a changed script builds a new image.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import libvirt
import libvirt_qemu  # type: ignore[import-untyped]

LAB_DIR = Path("/var/lib/virtmon-lab")
GUEST_DIR = LAB_DIR / "guest"
# The lab's disk images; a domain's files there are named after it (removed with it).
IMAGE_DIR = LAB_DIR / "images"
KERNEL_META_PACKAGE = "linux-image-amd64"
# The Debian packages whose files go into the initramfs (the Makefile's LAB_PACKAGES installs them).
GUEST_PACKAGES = ("busybox-static", "qemu-guest-agent")
QEMU_GA = "/usr/sbin/qemu-ga"
# Where the compressed kernel starts inside Debian's bzImage.
XZ_MAGIC = b"\xfd7zXZ\x00"
BUSYBOX = "/bin/busybox"
# The kernel modules the guest loads (their dependencies come along): the virtio transport and
# devices, the watchdog, the ACPI power button, pvpanic (ISA, found through ACPI by -mmio) and
# ext4 for the data disk (which asks the crypto API for crc32c by name: no module names it).
MODULES = ("virtio_pci", "virtio_console", "virtio_balloon", "virtio_blk", "virtio_net",
           "virtio_mem", "i6300esb", "button", "evdev", "pvpanic_mmio", "crc32c_generic", "ext4")
# The guest's data disk: a raw ext4 image beside the lab's disks, mounted in the guest.
DATA_MOUNT = "/data"
DATA_DISK_MIB = 32
# The guest's NIC (user-mode networking, QEMU's own address plan) and its static address.
NIC = "eth0"
NIC_ADDRESS = "10.0.2.15/24"
# The NIC's device XML: user-mode networking, nothing to set up on the host.
USER_NIC = "<interface type='user'><model type='virtio'/></interface>"
# A virtio port the guest echoes back byte for byte.
ECHO_CHANNEL = "org.virtmon.echo.0"

INITTAB = """\
::sysinit:/etc/rc
ttyS0::respawn:/bin/sh -l
::ctrlaltdel:/bin/reboot
::shutdown:/bin/sync
"""

RC = f"""\
#!/bin/sh
# The guest's start: file systems, modules, network, data disk, power button, echo port, agent.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
hostname guest
while read -r module; do insmod "/lib/modules/$module.ko"; done < /etc/modules
ip link set lo up
ip link set {NIC} up && ip addr add {NIC_ADDRESS} dev {NIC}
mkdir -p {DATA_MOUNT}
# The data disk is the only virtio disk at boot; one hot-plugged later is a test's own.
[ -b /dev/vda ] && mount -t ext4 /dev/vda {DATA_MOUNT}
acpid -c /etc/acpi -l /run/acpid.log
/bin/echo-port {ECHO_CHANNEL}
# The agent last: its connection (libvirt's agent_lifecycle event) tells a test that the guest
# is ready, the power button and the echo port included.
/bin/agent-ctl start
"""

VIRTIO_PORT = """\
#!/bin/sh
# virtio-port NAME: the device node of the named virtio port, once it exists (devtmpfs creates
# the node shortly after the port shows in sysfs).
tries=0
while :; do
    for dir in /sys/class/virtio-ports/*; do
        if [ "$(cat "$dir/name" 2>/dev/null)" = "$1" ] && [ -c "/dev/${dir##*/}" ]; then
            echo "/dev/${dir##*/}"
            exit 0
        fi
    done
    tries=$((tries + 1))
    [ $tries -gt 100 ] && { echo "virtio-port: no port $1" >&2; exit 1; }
    sleep 0.1
done
"""

ECHO_PORT = """\
#!/bin/sh
# echo-port NAME: send back every byte that arrives on a virtio port, detached. A port opens
# once at a time, so one descriptor reads and writes; cat ends when the host side closes.
dev=$(virtio-port "$1") || exit 1
setsid sh -c "while :; do cat <>$dev >&0; sleep 0.2; done" </dev/null >/dev/null 2>&1 &
"""

AGENT_CTL = """\
#!/bin/sh
# agent-ctl start|stop|restart SECONDS: qemu-ga on the org.qemu.guest_agent.0 virtio port.
# restart runs detached (it is usually asked for through the agent itself): it stops the agent,
# waits SECONDS and starts it again.
case "$1" in
start)
    dev=$(virtio-port org.qemu.guest_agent.0) || exit 1
    exec qemu-ga -d -m virtio-serial -p "$dev" -f /run/qemu-ga.pid -t /run
    ;;
stop)
    kill "$(cat /run/qemu-ga.pid)"
    ;;
restart)
    setsid sh -c "sleep 1; /bin/agent-ctl stop; sleep ${2:-3}; /bin/agent-ctl start" \\
        </dev/null >/dev/null 2>&1 &
    ;;
esac
"""

WATCHDOG_CTL = """\
#!/bin/sh
# watchdog-ctl start SECONDS|stop|starve: busybox's watchdog daemon feeding the i6300esb.
# stop closes the device with the magic character (the watchdog disarms); starve kills the
# daemon so the device stays armed and fires.
case "$1" in
start) watchdog -T "${2:-4}" -t 1 /dev/watchdog ;;
stop) kill "$(pidof watchdog)" ;;
starve) kill -9 "$(pidof watchdog)" ;;
esac
"""

OS_RELEASE = """\
ID=virtmon-lab
NAME="virtmon lab guest"
VERSION_ID=1
PRETTY_NAME="virtmon lab guest 1"
"""

POWER_BUTTON = """\
#!/bin/sh
poweroff
"""

# Files of the initramfs beyond binaries and modules: path, mode, text.
FILES: tuple[tuple[str, int, str], ...] = (
    ("etc/inittab", 0o644, INITTAB),
    ("etc/rc", 0o755, RC),
    # What qemu-ga reports as the guest's OS (guest-get-osinfo reads it).
    ("etc/os-release", 0o644, OS_RELEASE),
    ("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"),
    ("etc/group", 0o644, "root:x:0:\n"),
    ("etc/profile", 0o644, "export PATH=/bin:/sbin:/usr/bin:/usr/sbin\nexport PS1='guest# '\n"),
    ("bin/virtio-port", 0o755, VIRTIO_PORT),
    ("bin/echo-port", 0o755, ECHO_PORT),
    ("bin/agent-ctl", 0o755, AGENT_CTL),
    ("bin/watchdog-ctl", 0o755, WATCHDOG_CTL),
    # busybox acpid runs CONFDIR/PWRF/00000080 when the power button's key event arrives.
    ("etc/acpi/PWRF/00000080", 0o755, POWER_BUTTON),
)
DIRECTORIES = ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run",
               "tmp", "root", "lib", "lib64", "lib/modules", "var", "mnt", DATA_MOUNT.lstrip("/"))


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A built guest: the kernel and initramfs files, and the key they are cached under."""

    kernel: Path
    initrd: Path
    key: str


def _run(*argv: str, cwd: Path | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, cwd=cwd).stdout


def kernel_package() -> tuple[str, str]:
    """The versioned kernel package the meta package depends on, and its candidate version."""
    depends = _run("apt-cache", "depends", KERNEL_META_PACKAGE)
    match = re.search(r"Depends: (linux-image-\S+)", depends)
    if match is None:
        raise RuntimeError(f"{KERNEL_META_PACKAGE} depends on no kernel image:\n{depends}")
    package = match.group(1)
    shown = _run("apt-cache", "show", "--no-all-versions", package)
    version = re.search(r"^Version: (\S+)", shown, re.MULTILINE)
    if version is None:
        raise RuntimeError(f"apt knows no version of {package}")
    return package, version.group(1)


def installed_version(package: str) -> str:
    """An installed package's version (the guest takes its files from the host's install)."""
    return _run("dpkg-query", "-W", "-f=${Version}", package)


def image_key() -> str:
    """A digest of what the image is made of: the package versions and this recipe."""
    package, version = kernel_package()
    parts = [f"{package}={version}"]
    parts += [f"{name}={installed_version(name)}" for name in GUEST_PACKAGES]
    parts.append(hashlib.sha256(Path(__file__).read_bytes()).hexdigest())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class Cpio:
    """An initramfs archive in the ``newc`` format, written in memory."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._inode = 1
        self._seen: set[str] = set()

    def _entry(self, path: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
               ) -> None:
        name = path.encode() + b"\0"
        fields = (self._inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name), 0)
        self._inode += 1
        header = b"070701" + b"".join(b"%08X" % field for field in fields)
        self._out.write(header + name)
        self._out.write(b"\0" * (-(len(header) + len(name)) % 4))
        self._out.write(data)
        self._out.write(b"\0" * (-len(data) % 4))

    def directory(self, path: str) -> None:
        """A directory (and its parents), once."""
        parent = os.path.dirname(path)
        if parent:
            self.directory(parent)
        if path not in self._seen:
            self._seen.add(path)
            self._entry(path, 0o040755)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """A regular file (its directories created first)."""
        if os.path.dirname(path):
            self.directory(os.path.dirname(path))
        self._entry(path, 0o100000 | mode, data)

    def symlink(self, path: str, target: str) -> None:
        """A symbolic link."""
        self._entry(path, 0o120777, target.encode())

    def char_device(self, path: str, major: int, minor: int) -> None:
        """A character device node."""
        self._entry(path, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        """The archive with its trailer."""
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


def shared_libraries(binary: str) -> list[str]:
    """The absolute paths of the shared libraries a binary loads, the loader included."""
    paths = []
    for line in _run("ldd", binary).splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            paths.append(match.group(1))
    return paths


def module_info(path: Path) -> tuple[str, list[str]]:
    """A kernel module's name and the modules it depends on, read from its ``.modinfo``."""
    data = path.read_bytes()
    fields = dict(re.findall(rb"(?:^|\0)(name|depends)=([^\0]*)", data))
    name = fields.get(b"name", path.stem.encode()).decode()
    depends = [dep for dep in fields.get(b"depends", b"").decode().split(",") if dep]
    return name, depends


def modules_in_order(module_root: Path, wanted: tuple[str, ...]) -> list[tuple[str, Path]]:
    """The wanted modules and everything they depend on, each after its dependencies."""
    files = {path.stem.replace("-", "_"): path for path in module_root.rglob("*.ko")}
    ordered: list[tuple[str, Path]] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        path = files.get(name)
        if path is None:
            raise RuntimeError(f"no kernel module {name} under {module_root}")
        for dependency in module_info(path)[1]:
            place(dependency)
        placed.add(name)
        ordered.append((name, path))

    for name in wanted:
        place(name)
    return ordered


def fetch_kernel(scratch: Path) -> Path:
    """Download the kernel package into ``scratch`` and unpack its kernel and drivers there;
    returns the unpacked tree. apt's lists are refreshed once if the version is gone."""
    package, version = kernel_package()
    try:
        _run("apt-get", "download", "-q", f"{package}={version}", cwd=scratch)
    except subprocess.CalledProcessError:
        _run("apt-get", "update", "-qq")
        package, version = kernel_package()
        _run("apt-get", "download", "-q", f"{package}={version}", cwd=scratch)
    deb = next(scratch.glob("linux-image-*.deb"))
    tree = scratch / "tree"
    tree.mkdir()
    unpack = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(tree), "--wildcards", "./boot/vmlinuz-*",
                    "./lib/modules/*/kernel/drivers/*", "./lib/modules/*/kernel/net/*",
                    "./lib/modules/*/kernel/fs/*", "./lib/modules/*/kernel/lib/*",
                    "./lib/modules/*/kernel/crypto/*"],
                   stdin=unpack.stdout, check=True)
    assert unpack.stdout is not None
    unpack.stdout.close()
    if unpack.wait() != 0:
        raise RuntimeError(f"dpkg-deb could not unpack {deb}")
    return tree


def uncompressed_kernel(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (Debian's is xz-compressed). QEMU boots it through its
    PVH entry point: no real-mode setup and no decompression in the guest, which under TCG
    takes seconds."""
    start = bzimage.find(XZ_MAGIC)
    if start < 0:
        raise RuntimeError("the kernel image holds no xz stream")
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
    if not elf.startswith(b"\x7fELF"):
        raise RuntimeError("the kernel image's xz stream is not an ELF kernel")
    return elf


def initramfs(module_root: Path) -> bytes:
    """The gzipped initramfs: busybox as init, qemu-ga and its libraries, modules, scripts."""
    archive = Cpio()
    for directory in DIRECTORIES:
        archive.directory(directory)
    archive.char_device("dev/console", 5, 1)
    archive.char_device("dev/null", 1, 3)
    archive.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    archive.symlink("init", "/bin/busybox")
    applets = _run(BUSYBOX, "--list").split()
    for applet in applets:
        if applet != "busybox":
            archive.symlink(f"bin/{applet}", "busybox")
    archive.file(QEMU_GA.lstrip("/"), Path(QEMU_GA).read_bytes(), 0o755)
    for library in shared_libraries(QEMU_GA):
        # Under its own path: the loader path is compiled into qemu-ga.
        archive.file(library.lstrip("/"), Path(library).read_bytes(), 0o755)
    loaded = []
    for name, path in modules_in_order(module_root, MODULES):
        archive.file(f"lib/modules/{name}.ko", path.read_bytes())
        loaded.append(name)
    archive.file("etc/modules", ("\n".join(loaded) + "\n").encode())
    for name, mode, text in FILES:
        archive.file(name, text.encode(), mode)
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)


def build(target: Path) -> None:
    """Build the kernel and initramfs into ``target`` (made atomically: a half-built image
    never has the final name)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        scratch = Path(tmp)
        # apt-get download writes as the _apt user when it can.
        scratch.chmod(0o755)
        tree = fetch_kernel(scratch)
        kernel = next((tree / "boot").glob("vmlinuz-*"))
        module_root = next((tree / "lib" / "modules").iterdir())
        staged = scratch / "image"
        staged.mkdir()
        (staged / "vmlinux").write_bytes(uncompressed_kernel(kernel.read_bytes()))
        (staged / "initrd.gz").write_bytes(initramfs(module_root))
        (staged / "kernel-release").write_text(module_root.name + "\n")
        for path in (staged, staged / "vmlinux", staged / "initrd.gz"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            staged.rename(target)
        except OSError:
            # Another process built the same image meanwhile: theirs is as good.
            if not (target / "initrd.gz").exists():
                raise


def ensure_image(log: Callable[[str], None] | None = None) -> GuestImage:
    """The cached guest image, built first when missing (a few seconds and a 70 MB download)."""
    GUEST_DIR.mkdir(parents=True, exist_ok=True)
    GUEST_DIR.chmod(0o755)
    key = image_key()
    target = GUEST_DIR / key
    if not (target / "initrd.gz").exists():
        if log is not None:
            log(f"building the guest image {target}")
        build(target)
    return GuestImage(target / "vmlinux", target / "initrd.gz", key)


# The guest's kernel command line: the serial console, quiet (every console line costs time on
# the emulated UART), no reboot after a panic (pvpanic reports it and the domain stays
# inspectable), hot-plugged memory onlined at once (virtio-mem).
VIRTIO_MEM_ALIAS = "ua-virtiomem"
DIMM_ROOM_MIB = 256
CMDLINE = "console=ttyS0 quiet panic=0 memhp_default_state=online"


def domain_xml(name: str, image: GuestImage, kind: str, *, mark: str, data_disk: Path,
               memory_mib: int = 192, watchdog_action: str = "pause",
               virtio_mem_mib: int = 0, nic: str = USER_NIC) -> str:
    """A domain booting the guest directly: serial console (logged beside the QEMU log), the
    agent and echo channels, the data disk, a virtio NIC on user-mode networking, a balloon
    with a 2 s statistics period, pvpanic, an i6300esb watchdog, ACPI (power button, PCI
    hot-unplug) and suspend to RAM/disk enabled; ``nic`` replaces the NIC's XML; with
    ``virtio_mem_mib``, a virtio-mem device of that size (none of it plugged at start: it needs a
    NUMA cell and a maximum memory)."""
    numa = max_memory = virtio_mem = ""
    if virtio_mem_mib:
        # Room beyond it for one hot-plugged DIMM.
        max_memory = (f"<maxMemory slots='2' unit='MiB'>"
                      f"{memory_mib + virtio_mem_mib + DIMM_ROOM_MIB}</maxMemory>")
        numa = (f"<cpu><numa><cell id='0' cpus='0' memory='{memory_mib}' unit='MiB'/></numa>"
                "</cpu>")
        virtio_mem = f"""<memory model='virtio-mem'>
      <target>
        <size unit='MiB'>{virtio_mem_mib}</size><node>0</node>
        <block unit='MiB'>2</block><requested unit='MiB'>0</requested>
      </target>
      <alias name='{VIRTIO_MEM_ALIAS}'/>
    </memory>"""
    return f"""<domain type='{kind}'>
  <name>{name}</name>
  <description>{mark}</description>
  {max_memory}
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  {numa}
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{image.kernel}</kernel>
    <initrd>{image.initrd}</initrd>
    <cmdline>{CMDLINE}</cmdline>
  </os>
  <features><acpi/></features>
  <pm><suspend-to-mem enabled='yes'/><suspend-to-disk enabled='yes'/></pm>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>preserve</on_crash>
  <devices>
    <serial type='pty'><log file='/var/log/libvirt/qemu/{name}-serial.log'/></serial>
    <console type='pty'/>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <channel type='unix'><target type='virtio' name='{ECHO_CHANNEL}'/></channel>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{data_disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    {nic}
    <memballoon model='virtio'><stats period='2'/></memballoon>
    <watchdog model='i6300esb' action='{watchdog_action}'/>
    <panic model='isa'/>
    {virtio_mem}
  </devices>
</domain>"""


def virt_type(capabilities: str) -> str:
    """'kvm' where the host offers hardware KVM (kvm_intel or kvm_amd), 'qemu' (TCG) otherwise.
    A KVM that is not hardware-assisted (PVM, say) runs the no-OS domains but cannot run a stock
    kernel: the decompressor never finishes there."""
    hardware = any(Path(f"/sys/module/{module}").exists() for module in ("kvm_intel", "kvm_amd"))
    return "kvm" if hardware and "<domain type='kvm'" in capabilities else "qemu"


def agent_command(dom: Any, command: str, arguments: dict[str, Any] | None = None,
                  timeout: int = 30) -> Any:
    """One guest-agent command through libvirt; its ``return`` value."""
    request: dict[str, Any] = {"execute": command}
    if arguments is not None:
        request["arguments"] = arguments
    answer = libvirt_qemu.qemuAgentCommand(dom, json.dumps(request), timeout, 0)
    return json.loads(answer)["return"] if answer else None


def guest_exec(dom: Any, script: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run a shell script in the guest through the agent and wait for it: exit code, output
    (stdout and stderr). A script that takes the agent down (poweroff, agent-ctl) must detach."""
    pid = agent_command(dom, "guest-exec", {"path": "/bin/sh", "arg": ["-c", script],
                                             "capture-output": True})["pid"]
    deadline = time.monotonic() + timeout
    while True:
        status = agent_command(dom, "guest-exec-status", {"pid": pid})
        if status["exited"]:
            output = b"".join(base64.b64decode(status.get(key, ""))
                              for key in ("out-data", "err-data"))
            return int(status.get("exitcode", -1)), output.decode(errors="replace")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the guest did not finish {script!r} within {timeout:g} s")
        time.sleep(0.2)


def make_data_disk(path: Path) -> None:
    """A fresh raw disk with an empty ext4 file system."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as disk:
        disk.truncate(DATA_DISK_MIB << 20)
    _run("mkfs.ext4", "-q", "-F", "-L", "data", str(path))


def create(conn: Any, name: str, *, mark: str, start: bool = True, **options: Any) -> Any:
    """Define (and start) a guest domain on the cached image (built first when missing) with a
    fresh data disk; ``options`` go to :func:`domain_xml`."""
    data_disk = IMAGE_DIR / f"{name}.data.raw"
    make_data_disk(data_disk)
    xml = domain_xml(name, ensure_image(), virt_type(conn.getCapabilities()), mark=mark,
                     data_disk=data_disk, **options)
    dom = conn.defineXML(xml)
    if start:
        dom.create()
    return dom


def wait_agent(dom: Any, timeout: float = 60.0) -> None:
    """Wait until the guest's agent answers a ping."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            agent_command(dom, "guest-ping", timeout=5)
            return
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def spawn(dom: Any, script: str) -> None:
    """Start a shell script in the guest, detached, one second later, and return at once: for
    what takes the agent down with it (poweroff, reboot, a panic, an agent restart)."""
    detached = f"(sleep 1; {script}) </dev/null >/dev/null 2>&1 &"
    agent_command(dom, "guest-exec", {"path": "/bin/sh", "arg": ["-c", detached]})


def resize_virtio_mem(dom: Any, requested_mib: int) -> None:
    """Ask the guest's virtio-mem device for ``requested_mib`` plugged. libvirt 9.0 finds the
    device to update by its live definition (target, address), not by its alias alone."""
    device = ElementTree.fromstring(dom.XMLDesc(0)).find("./devices/memory[@model='virtio-mem']")
    if device is None:
        raise RuntimeError("the domain has no virtio-mem device")
    target = device.find("target")
    assert target is not None
    for current in target.findall("current"):
        target.remove(current)
    requested = target.find("requested")
    assert requested is not None
    requested.attrib["unit"] = "MiB"
    requested.text = str(requested_mib)
    dom.updateDeviceFlags(ElementTree.tostring(device, encoding="unicode"),
                          libvirt.VIR_DOMAIN_AFFECT_LIVE)
