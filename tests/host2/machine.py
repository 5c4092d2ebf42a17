"""A second host: a Debian 12 container booted by `systemd-nspawn -b`, with systemd as its PID 1,
running libvirt 11.3 and QEMU 10.0 from Debian's bookworm-backports (the lab host runs 9.0/7.2).

The root file system is built once with debootstrap from Debian's registry and kept under the lab
directory, keyed by what goes into it (suite, packages and their candidate versions, debootstrap's
own version): a new package version builds a new image. A second image, the builder, adds what
building virtmon's Debian package takes; the package is built in it, so that libvirt-python is
compiled against the libvirt it will run with (the binding knows that libvirt's event ids and
constants), exactly as `make deb` on the target would. Each run boots a fresh copy of the first
image, in which that package is installed with `apt install` as an operator would. Everything a
boot starts or mounts is ended when it is left, also on failure.

`python -m tests.host2.machine build` builds (or finds) both images and prints their directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
LAB = Path("/var/lib/virtmon-lab/host2")
IMAGES = LAB / "images"
SUITE = "bookworm"
BACKPORTS = f"{SUITE}-backports"
MIRROR = "http://deb.debian.org/debian"
# The suites apt sees, the host's view of them kept apart from the host's own lists.
SOURCES = (f"deb {MIRROR} {SUITE} main\n"
           f"deb {MIRROR} {SUITE}-updates main\n"
           f"deb http://deb.debian.org/debian-security {SUITE}-security main\n"
           f"deb {MIRROR} {BACKPORTS} main\n")
APT_VIEW = LAB / "apt"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# systemd as PID 1, and no more: the package's own dependencies come with `apt install`.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "ca-certificates")
# From bookworm-backports: libvirt 11.3 (the QEMU driver is its own package since 10.x, only
# recommended) and QEMU 10.0.
VIRT_PACKAGES = ("libvirt-daemon-system", "libvirt-daemon-driver-qemu", "libvirt-clients",
                 "qemu-system-x86", "qemu-utils")
# What the builder adds: libvirt's headers and API description (from backports, matching the
# daemon), a compiler and Python's headers for libvirt-python and strip.
BUILD_PACKAGES = ("libvirt-dev", "python3-venv", "python3-dev", "gcc", "pkg-config", "binutils")
# Where the operator put the downloaded package.
PACKAGE_DIR = "/root"
MACHINE = "virtmon-host2"
# A link between the host and the container (a veth pair, link-local addresses), over which the
# container's libvirtd listens on TCP without authentication (nothing else reaches that network)
# and QEMU migrates guests both ways.
LINK_HOST_SIDE, LINK_CONTAINER_SIDE = "vmhost2", "vmlink"
HOST_ADDRESS, PEER_ADDRESS = "169.254.213.1", "169.254.213.2"
PEER_URI = f"qemu+tcp://{PEER_ADDRESS}/system"
# The lab host's libvirt sockets as the container sees them (bound read-only: connecting to a
# socket needs no write access to its file system), so that the container's virtmon and libvirtd
# migrate guests back without the lab's libvirtd listening on TCP. Clients reach it through a
# proxy of the container's own (systemd-socket-proxyd, root): the lab's libvirtd names each
# client's uid and gid from its own user database and refuses one it has no record of ("Failed
# to find group record for gid"), such as the container's group virtmon, which the hardened
# unit runs virtmon with (Group=virtmon).
HOST_LIBVIRT_DIR = "/run/host-libvirt"
HOST_LIBVIRT_PROXY = "/run/lab-libvirt/libvirt-sock"
HOST_URI_INSIDE = f"qemu+unix:///system?socket={HOST_LIBVIRT_PROXY}"
PROXY_UNITS = {
    "lab-libvirt.socket": f"""\
[Unit]
Description=The lab host's libvirt socket, for clients of any group

[Socket]
ListenStream={HOST_LIBVIRT_PROXY}
SocketMode=0600

[Install]
WantedBy=sockets.target
""",
    "lab-libvirt.service": f"""\
[Unit]
Description=Proxy to the lab host's libvirt socket

[Service]
ExecStart=/lib/systemd/systemd-socket-proxyd {HOST_LIBVIRT_DIR}/libvirt-sock
""",
}
# No system bus outside: nothing to register with, and no scope unit to make.
NSPAWN = ("systemd-nspawn", "--register=no", "--keep-unit", "--quiet")


def apt_view() -> list[str]:
    """apt options for a view of the container's suites (backports included) beside the host's
    own configuration, its lists refreshed at most once an hour."""
    lists = APT_VIEW / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    sources = APT_VIEW / "sources.list"
    sources.write_text(SOURCES)
    options = [f"-oDir::Etc::SourceList={sources}", f"-oDir::Etc::SourceParts={APT_VIEW}/none",
               f"-oDir::State::Lists={lists}"]
    stamp = APT_VIEW / "updated"
    if not stamp.exists() or time.time() - stamp.stat().st_mtime > 3600:
        subprocess.run(["apt-get", *options, "update", "-qq"], check=True,
                       stdout=subprocess.DEVNULL)
        stamp.touch()
    return options


def _candidates(names: tuple[str, ...], release: str | None = None) -> dict[str, str]:
    """The version apt would install of each package, from the container's suites (``release``
    preferred when given)."""
    target = ["-t", release] if release else []
    out = subprocess.run(["apt-cache", *apt_view(), *target, "policy", *names],
                         capture_output=True, text=True, check=True).stdout
    versions: dict[str, str] = {}
    package = ""
    for line in out.splitlines():
        if not line.startswith(" "):
            package = line.rstrip(":")
        elif line.strip().startswith("Candidate:"):
            versions[package] = line.split(":", 1)[1].strip()
    missing = set(names) - versions.keys()
    if missing:
        raise RuntimeError(f"apt knows no candidate for {sorted(missing)}")
    return versions


def candidate_versions() -> dict[str, str]:
    """What goes into the images: the base from the suite (and debootstrap's own version), the
    virtualisation and build packages from backports."""
    return {**_candidates((*BASE_PACKAGES, "debootstrap")),
            **_candidates((*VIRT_PACKAGES, *BUILD_PACKAGES), BACKPORTS)}


def image_key(versions: dict[str, str]) -> str:
    """The image's name: a digest of the suite, every version that goes into it and this
    recipe."""
    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    text = json.dumps({"suite": SUITE, "versions": versions, "recipe": recipe}, sort_keys=True)
    return f"{SUITE}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first (the order to unmount them in)."""
    prefix = str(path)
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    inside = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(inside), key=len, reverse=True)


def unmount_all(path: Path) -> None:
    """Unmount whatever a tool left mounted under path (debootstrap's /proc and /sys on failure)."""
    for point in mounts_under(path):
        subprocess.run(["umount", "--lazy", point], check=False)


def remove_tree(path: Path) -> None:
    """Delete a root file system, never following a mount into the host's own directories."""
    unmount_all(path)
    if mounts_under(path):
        raise RuntimeError(f"{path} still has mounts: {mounts_under(path)}")
    shutil.rmtree(path, ignore_errors=True)


def apt_install_in(root: Path, packages: tuple[str, ...], release: str | None = None) -> None:
    """Install packages into a root file system that is not booted (no service starts), with the
    host's network."""
    target = f"-t {release}" if release else ""
    script = ("set -eu\nexport DEBIAN_FRONTEND=noninteractive\napt-get update -qq\n"
              f"apt-get install -qq --no-install-recommends {target} {' '.join(packages)}")
    subprocess.run([*NSPAWN, "-D", str(root), "--pipe", "/bin/sh", "-c", script], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=1800)


def _cached(image: Path, make: Callable[[Path], None], versions: dict[str, str]) -> Path:
    """An image made by ``make`` into a staging directory, renamed into place when complete."""
    if (image / "virtmon-image.json").exists():
        return image
    staging = image.with_name(image.name + ".building")
    remove_tree(staging)
    IMAGES.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        make(staging)
    except BaseException:
        remove_tree(staging)
        raise
    seconds = time.monotonic() - started
    (staging / "virtmon-image.json").write_text(json.dumps(
        {"versions": versions, "build_seconds": round(seconds, 1)}, indent=1))
    staging.rename(image)
    return image


def _make_host(staging: Path) -> None:
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                    SUITE, str(staging), MIRROR], check=True, stdout=subprocess.DEVNULL)
    (staging / "etc/apt/sources.list").write_text(SOURCES)
    apt_install_in(staging, VIRT_PACKAGES, BACKPORTS)
    # The host's cgroup v1 hierarchies are read-only inside the container: libvirt starts QEMU
    # without a cgroup of its own (on a real host it makes one per domain).
    with (staging / "etc/libvirt/qemu.conf").open("a") as conf:
        conf.write("\ncgroup_controllers = [ ]\n")
    # Its own host UUID (libvirt would read the host's SMBIOS one: a migration between the two
    # would be refused as one to the same host), and TCP on the link.
    with (staging / "etc/libvirt/libvirtd.conf").open("a") as conf:
        conf.write(f'\nhost_uuid = "{uuid.uuid4()}"\nauth_tcp = "none"\n')
    subprocess.run(["systemctl", f"--root={staging}", "enable", "--quiet", "libvirtd-tcp.socket"],
                   check=True)
    (staging / "etc/hostname").write_text(f"{MACHINE}\n")
    # Each boot gets its own machine id (systemd makes one when the file is empty).
    (staging / "etc/machine-id").write_text("")


def build_image() -> Path:
    """The cached root file system of the second host for the current package versions, built
    if missing."""
    versions = candidate_versions()
    return _cached(IMAGES / image_key(versions), _make_host, versions)


def build_builder(image: Path) -> Path:
    """The cached builder: a copy of the host's image with the build packages added."""
    versions = candidate_versions()

    def make(staging: Path) -> None:
        subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(staging)], check=True)
        (staging / "virtmon-image.json").unlink()
        apt_install_in(staging, BUILD_PACKAGES, BACKPORTS)

    return _cached(image.with_name(image.name + "-builder"), make, versions)


def build_seconds(image: Path) -> float:
    """How long debootstrap took to build the image."""
    return float(json.loads((image / "virtmon-image.json").read_text())["build_seconds"])


def prune_images(keep: set[Path]) -> None:
    """Remove the images of other package versions or recipes (each is up to a gigabyte)."""
    for image in IMAGES.iterdir():
        if image not in keep:
            remove_tree(image)


def build_package(builder: Path, outdir: Path) -> Path:
    """virtmon's Debian package, built from the checkout as `make deb` builds it, inside the
    builder (whose root and view of the checkout are overlays: the build changes neither), into
    outdir."""
    git = ["git", "-C", str(CHECKOUT), "log", "-1"]
    commit = subprocess.run([*git, "--format=%h"], capture_output=True, text=True).stdout.strip()
    date = subprocess.run([*git, "--format=%aD"], capture_output=True, text=True).stdout.strip()
    subprocess.run([*NSPAWN, "-D", str(builder), "--volatile=overlay",
                    f"--overlay={CHECKOUT}::/src", f"--bind={outdir}:/out",
                    f"--setenv=VIRTMON_COMMIT={commit or 'unknown'}",
                    f"--setenv=VIRTMON_COMMIT_DATE={date}",
                    # pip trusts what the host trusts (its vendored list knows no local CA).
                    f"--bind-ro={HOST_CA_BUNDLE}:/run/host-ca.crt",
                    "--setenv=PIP_CERT=/run/host-ca.crt", "--pipe",
                    "/src/packaging/deb/build", "/src", "/out"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=1800)
    (package,) = outdir.glob("virtmon_*_amd64.deb")
    return package


def fetch_dependencies(root: Path, package: Path) -> None:
    """Put the package where an operator would, and download what it depends on into apt's
    cache, with the host's network: the booted container has none (only its loopback)."""
    shutil.copy2(package, root / PACKAGE_DIR.lstrip("/") / package.name)
    script = (f"set -eu\ncd {PACKAGE_DIR}\nexport DEBIAN_FRONTEND=noninteractive\n"
              f"apt-get update -qq\napt-get install -qq --download-only ./{package.name}")
    subprocess.run([*NSPAWN, "-D", str(root), "--pipe", "/bin/sh", "-c", script], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=900)


@dataclass
class Booted:
    """A running container: its systemd is `leader`, on the host's side of the PID namespace."""

    root: Path
    nspawn: subprocess.Popen[bytes]
    leader: int
    boot_seconds: float
    # The package's file name, in PACKAGE_DIR, and the state of the virtmon units right after
    # `apt install` started them (`systemctl show`'s properties), from the first boot.
    package: str = ""
    after_install: dict[str, str] = field(default_factory=dict)

    def run(self, command: str, *, check: bool = True, timeout: float = 120,
            ) -> subprocess.CompletedProcess[str]:
        """A shell command inside the container (all its namespaces, as root)."""
        result = subprocess.run(
            ["nsenter", f"--target={self.leader}", "--all", "--", "/bin/sh", "-c", command],
            capture_output=True, text=True, timeout=timeout, check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
        if check and result.returncode != 0:
            raise AssertionError(f"{command!r} exited {result.returncode}:\n{result.stdout}"
                                 f"{result.stderr}")
        return result


def _leader_of(nspawn: subprocess.Popen[bytes]) -> int | None:
    """The container's PID 1 as the host sees it: systemd-nspawn's only child once it booted."""
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{nspawn.pid}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
    return None


def _wait_until_up(nspawn: subprocess.Popen[bytes], deadline: float) -> int:
    """The leader once `systemctl is-system-running --wait` says the boot finished."""
    while time.monotonic() < deadline:
        if nspawn.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited {nspawn.returncode} while booting")
        leader = _leader_of(nspawn)
        if leader is not None and Path(f"/proc/{leader}/comm").read_text().strip() == "systemd":
            state = subprocess.run(
                ["nsenter", f"--target={leader}", "--all", "--", "systemctl",
                 "is-system-running", "--wait"],
                capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()),
                check=False).stdout.strip()
            if state in ("running", "degraded"):
                return leader
        time.sleep(0.2)
    raise TimeoutError("the container did not finish booting")


def _link(leader: int) -> None:
    """The veth pair between the host and the container, addressed on both sides (it goes away
    with the container's network namespace)."""
    subprocess.run(["ip", "link", "del", LINK_HOST_SIDE], check=False, stderr=subprocess.DEVNULL)
    for command in (
        ["ip", "link", "add", LINK_HOST_SIDE, "type", "veth", "peer", "name",
         LINK_CONTAINER_SIDE, "netns", str(leader)],
        ["ip", "addr", "add", f"{HOST_ADDRESS}/30", "dev", LINK_HOST_SIDE],
        ["ip", "link", "set", LINK_HOST_SIDE, "up"],
        ["nsenter", f"--target={leader}", "--net", "--", "ip", "addr", "add",
         f"{PEER_ADDRESS}/30", "dev", LINK_CONTAINER_SIDE],
        ["nsenter", f"--target={leader}", "--net", "--", "ip", "link", "set",
         LINK_CONTAINER_SIDE, "up"],
    ):
        subprocess.run(command, check=True)


def _power_off(nspawn: subprocess.Popen[bytes]) -> None:
    """SIGTERM asks the container's systemd to shut down; SIGKILL if it does not in time."""
    if nspawn.poll() is None:
        nspawn.send_signal(signal.SIGTERM)
        try:
            nspawn.wait(timeout=60)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait(timeout=30)


def private_kvm_node(directory: Path) -> Path:
    """A device node of the container's own for the host's KVM device, to bind as its /dev/kvm.

    Bound as it is, the host's /dev/kvm would be the container's: its boot gives /dev/kvm the
    group and mode of its own kvm group (systemd-tmpfiles' static-nodes rules), whose number is
    not the host's, and the host's QEMU loses KVM ("Permission denied"). A second node for the
    same device takes those changes instead."""
    node = directory / "kvm"
    node.unlink(missing_ok=True)
    os.mknod(node, stat.S_IFCHR | 0o600, os.stat("/dev/kvm").st_rdev)
    node.chmod(0o666)
    return node


@contextlib.contextmanager
def booted(root: Path, log: Path) -> Iterator[Booted]:
    """Boot root with systemd as PID 1 (no network but its own loopback and the link to the
    host, the KVM device bound in through a node of its own, the lab host's libvirt sockets
    under HOST_LIBVIRT_DIR)."""
    started = time.monotonic()
    with log.open("wb") as console:
        nspawn = subprocess.Popen(
            [*NSPAWN, "-D", str(root), f"--machine={MACHINE}", "--private-network",
             f"--bind={private_kvm_node(root.parent)}:/dev/kvm",
             f"--bind-ro=/run/libvirt:{HOST_LIBVIRT_DIR}", "--console=passive",
             "--boot"],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
    try:
        leader = _wait_until_up(nspawn, started + 120)
        _link(leader)
        yield Booted(root, nspawn, leader, time.monotonic() - started)
    finally:
        _power_off(nspawn)
        unmount_all(root)


# What the tests read of the units right after `apt install`.
INSTALL_PROPERTIES = ("ActiveState", "SubState", "StatusText", "UnitFileState")


def apt_install(host: Booted, package: str) -> dict[str, str]:
    """`apt install ./virtmon_*.deb` as an operator types it; the service's state afterwards."""
    host.run(f"cd {PACKAGE_DIR} && DEBIAN_FRONTEND=noninteractive apt install -y ./{package}",
             timeout=600)
    state = {}
    for unit in ("virtmon.service", "virtmon.socket"):
        out = host.run(f"systemctl show {' '.join('-p ' + p for p in INSTALL_PROPERTIES)} {unit}")
        state.update({f"{unit}:{key}": value for key, value in
                      (line.split("=", 1) for line in out.stdout.splitlines())})
    return state


@contextlib.contextmanager
def second_host(workdir: Path, image: Path, builder: Path) -> Iterator[Booted]:
    """A booted copy of the image with virtmon's package installed; all removed afterwards.

    The package is installed in a first boot (its postinst enables and starts the units); the
    second boot starts virtmon as every boot of the host will, and the proxy to the lab's libvirt
    socket.
    """
    root = workdir / "rootfs"
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(root)], check=True)
        package = build_package(builder, workdir)
        fetch_dependencies(root, package)
        with booted(root, workdir / "install-console.log") as host:
            after_install = apt_install(host, package.name)
        proxy_to_the_lab(root)
        with booted(root, workdir / "console.log") as host:
            host.package = package.name
            host.after_install = after_install
            yield host
    finally:
        remove_tree(root)


def proxy_to_the_lab(root: Path) -> None:
    """The proxy to the lab's libvirt socket (HOST_LIBVIRT_PROXY), started with the sockets at
    the next boot."""
    units = root / "etc/systemd/system"
    for name, text in PROXY_UNITS.items():
        (units / name).write_text(text)
    wants = units / "sockets.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / "lab-libvirt.socket").symlink_to("../lab-libvirt.socket")


def _nspawns_on(root: Path) -> list[int]:
    """Processes of systemd-nspawn running a container on root (left by a killed run)."""
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"systemd-nspawn") and str(root).encode() in argv:
                pids.append(int(entry.name))
    return pids


def sweep_stale_runs() -> None:
    """Power off and remove what runs killed before their clean-up left (call under `exclusive`)."""
    for workdir in LAB.glob("run-*"):
        for pid in _nspawns_on(workdir / "rootfs"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _nspawns_on(workdir / "rootfs") and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in _nspawns_on(workdir / "rootfs"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        remove_tree(workdir)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One run at a time on this machine: the image, its copies and the machine name are shared."""
    LAB.mkdir(parents=True, exist_ok=True)
    with (LAB / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main() -> None:
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m tests.host2.machine build")
    if os.geteuid() != 0:
        sys.exit("building the image needs root (debootstrap)")
    image = build_image()
    builder = build_builder(image)
    prune_images({image, builder})
    print(image)
    print(builder)


if __name__ == "__main__":
    main()
