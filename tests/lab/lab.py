"""The test lab: a real virtlogd + libvirtd and tiny no-OS KVM (or TCG) domains.

Used by `make lab-up` / `make lab-down` (``python -m tests.lab.lab up|down|status``) and by the
pytest fixtures in tests/conftest.py. Every step is idempotent. Processes are stopped by the pid
in their pid file, never by name. The facts behind each step are in shared/docs/LAB.md.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from tests.lab import guest

HERE = Path(__file__).resolve().parent
URI = "qemu:///system"
ADMIN_URI = "libvirtd:///system"
LIBVIRTD_PIDFILE = Path("/run/libvirtd.pid")
VIRTLOGD_PIDFILE = Path("/run/virtlogd.pid")
REAPER_PIDFILE = Path("/run/virtmon-lab-reaper.pid")
LIBVIRTD_LOG = Path("/var/log/libvirt/virtmon-lab-stdio.log")
# Where libvirtd.conf's log_outputs sends libvirtd's own log.
LIBVIRTD_FILE_LOG = Path("/var/log/libvirt/virtmon-lab-libvirtd.log")
IMAGE_DIR = guest.IMAGE_DIR
TEST_USER = "virtmon-lab"
TEST_GROUP = "libvirt"
# Every lab domain carries this description, so tear-down finds exactly the lab's domains.
LAB_MARK = "virtmon-lab"
BASE_DOMAINS = 2


def _log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def _read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A child of ours that exited stays a zombie until reaped.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return False


def stop_pid(pidfile: Path, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Stop the process named by a pid file: the signal, then SIGKILL after the timeout."""
    pid = _read_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        if sig in (signal.SIGTERM, signal.SIGINT) and not _wait_gone(pid, timeout):
            _log(f"pid {pid} ignored signal {sig}; killing it")
            os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 5.0)
    pidfile.unlink(missing_ok=True)


def prepare_host() -> None:
    """Give /dev/kvm the Debian default, and create the test user and the image directory."""
    kvm = Path("/dev/kvm")
    if kvm.exists():
        kvm_gid = grp.getgrnam("kvm").gr_gid
        os.chown(kvm, 0, kvm_gid)
        kvm.chmod(0o660)
    ensure_test_user()
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    for path in (IMAGE_DIR, IMAGE_DIR.parent):
        path.chmod(0o755)
    Path("/var/log/libvirt").mkdir(parents=True, exist_ok=True)


def ensure_test_user() -> None:
    """Create the unprivileged test user (a member of the libvirt group) unless it exists."""
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-G", TEST_GROUP, TEST_USER], check=True
        )


def start_virtlogd() -> None:
    """Start virtlogd (domains cannot start without it), unless it already runs."""
    if _read_pid(VIRTLOGD_PIDFILE) is None:
        subprocess.run(["virtlogd", "-d", "-p", str(VIRTLOGD_PIDFILE)], check=True)


def start_libvirtd(timeout: float = 60.0) -> None:
    """Start libvirtd under the subreaper unless it already runs, and wait until it answers."""
    if _read_pid(LIBVIRTD_PIDFILE) is None:
        LIBVIRTD_PIDFILE.unlink(missing_ok=True)
        with LIBVIRTD_LOG.open("ab") as log:
            # Detached: the reaper outlives this process (a test session, make lab-up).
            subprocess.run(
                [sys.executable, str(HERE / "reaper.py"), "--detach", str(REAPER_PIDFILE),
                 "libvirtd", "-f", str(HERE / "libvirtd.conf"), "-p", str(LIBVIRTD_PIDFILE)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True,
            )
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            conn = libvirt.open(URI)
            try:
                conn.getCapabilities()  # the first call probes QEMU (about 2 s)
                return
            finally:
                conn.close()
        except libvirt.libvirtError as exc:
            last_error = exc
            time.sleep(0.2)
    raise RuntimeError(f"libvirtd did not answer within {timeout} s: {last_error}")


def libvirtd_pid() -> int | None:
    """The running lab libvirtd's pid, or None."""
    return _read_pid(LIBVIRTD_PIDFILE)


def vital_pids() -> dict[str, int | None]:
    """The processes the lab must keep for the whole run: libvirtd, virtlogd and the base
    domains' QEMUs, each with its pid (None when it is not running)."""
    pids = {"libvirtd": libvirtd_pid(), "virtlogd": _read_pid(VIRTLOGD_PIDFILE)}
    for index in range(BASE_DOMAINS):
        pids[f"QEMU of lab-{index}"] = _read_pid(Path(f"/run/libvirt/qemu/lab-{index}.pid"))
    return pids


def log_tail(lines: int = 30) -> str:
    """The last lines libvirtd wrote (its log file and its stdio), for a failure message."""
    out = []
    for path in (LIBVIRTD_FILE_LOG, LIBVIRTD_LOG):
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError as exc:
            text = [f"({exc})"]
        out.append(f"--- {path} ---")
        out.extend(text)
    return "\n".join(out)


@contextlib.contextmanager
def paused_libvirtd() -> Iterator[int]:
    """The lab's libvirtd SIGSTOPped for the body (calls to it hang), then SIGCONTinued."""
    pid = libvirtd_pid()
    if pid is None:
        raise RuntimeError("the lab's libvirtd is not running")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died meanwhile
            os.kill(pid, signal.SIGCONT)


def stop_libvirtd(sig: int = signal.SIGTERM) -> None:
    """Stop libvirtd by its pid (running domains survive, as on a real host)."""
    stop_pid(LIBVIRTD_PIDFILE, sig)


def virt_type(conn: Any) -> str:
    """'kvm' where the capabilities offer it, 'qemu' (TCG) otherwise."""
    return "kvm" if "<domain type='kvm'" in conn.getCapabilities() else "qemu"


def domain_xml(name: str, image: Path, kind: str) -> str:
    """A 64 MiB, 1-vCPU domain with no OS: SeaBIOS finds nothing and idles ('running')."""
    tap = "vl" + uuid.uuid4().hex[:10]
    return f"""<domain type='{kind}'>
  <name>{name}</name>
  <description>{LAB_MARK}</description>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{image}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='ethernet'>
      <target dev='{tap}' managed='yes'/>
      <model type='virtio'/>
    </interface>
    <memballoon model='virtio'><stats period='5'/></memballoon>
  </devices>
</domain>"""


def new_domain_xml(conn: Any, name: str) -> str:
    """A fresh 64 MiB qcow2 disk in the image directory and a lab domain's XML around it (for
    tests that define or create the domain themselves; remove_domain deletes the disk)."""
    image = IMAGE_DIR / f"{name}.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True
    )
    return domain_xml(name, image, virt_type(conn))


def create_domain(conn: Any, name: str, start: bool = True) -> Any:
    """Define (and start) a lab domain with a fresh 64 MiB qcow2 disk."""
    dom = conn.defineXML(new_domain_xml(conn, name))
    if start:
        dom.create()
    return dom


def remove_domain(conn: Any, name: str) -> None:
    """Destroy and undefine a domain and delete its disk; a missing domain is fine."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        dom = None
    if dom is not None:
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        )
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefineFlags(flags)
    for image in IMAGE_DIR.glob(f"{name}.*"):
        image.unlink(missing_ok=True)


# Names the lab, the tests and the benchmarks give their domains: a test may change a domain's
# description (metadata tests do), so tear-down also goes by name.
LAB_PREFIXES = ("lab-", "t-", "bench-")


def lab_domain_names(conn: Any) -> list[str]:
    """Names of every domain the lab made (marked by its description, or named by a prefix)."""
    names = []
    for dom in conn.listAllDomains(0):
        with contextlib.suppress(libvirt.libvirtError):
            if (dom.name().startswith(LAB_PREFIXES)
                    or f"<description>{LAB_MARK}</description>" in dom.XMLDesc(0)):
                names.append(dom.name())
    return names


@dataclass
class LabStatus:
    """What is running."""

    virtlogd: int | None
    libvirtd: int | None
    domains: list[str]


def up(domains: int = BASE_DOMAINS) -> None:
    """Bring the lab up: host preparation, the guest image (built when missing), virtlogd,
    libvirtd and the base domains, running."""
    prepare_host()
    guest.ensure_image(_log)
    start_virtlogd()
    start_libvirtd()
    conn = libvirt.open(URI)
    try:
        for index in range(domains):
            name = f"lab-{index}"
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                dom = create_domain(conn, name, start=False)
            if not dom.isActive():
                dom.create()
        names = lab_domain_names(conn)
        _log(f"up: libvirtd pid {libvirtd_pid()}, {virt_type(conn)} domains {names}")
    finally:
        conn.close()


def down() -> None:
    """Tear the lab down: remove every lab domain, then stop libvirtd and virtlogd by pid."""
    if libvirtd_pid() is not None:
        try:
            conn = libvirt.open(URI)
        except libvirt.libvirtError as exc:
            _log(f"down: cannot connect to remove domains: {exc}")
        else:
            try:
                for name in lab_domain_names(conn):
                    remove_domain(conn, name)
            finally:
                conn.close()
    stop_libvirtd()
    reaper = _read_pid(REAPER_PIDFILE)
    if reaper is not None:
        _wait_gone(reaper, 10.0)
    REAPER_PIDFILE.unlink(missing_ok=True)
    stop_pid(VIRTLOGD_PIDFILE)
    _log("down")


def status() -> LabStatus:
    """The lab's processes and domains."""
    names: list[str] = []
    if libvirtd_pid() is not None:
        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(URI)
            names = lab_domain_names(conn)
            conn.close()
    return LabStatus(_read_pid(VIRTLOGD_PIDFILE), libvirtd_pid(), names)


def main() -> int:
    """Command line: up [--domains N] | down | status."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    parser = argparse.ArgumentParser(prog="python -m tests.lab.lab")
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up")
    up_parser.add_argument("--domains", type=int, default=BASE_DOMAINS)
    sub.add_parser("down")
    sub.add_parser("status")
    args = parser.parse_args()
    if args.command == "up":
        up(args.domains)
    elif args.command == "down":
        down()
    else:
        print(status())
    return 0


if __name__ == "__main__":
    sys.exit(main())
