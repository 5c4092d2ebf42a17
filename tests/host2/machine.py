"""A second host: a Debian 12 container booted by `systemd-nspawn -b`, with systemd as its PID 1.

The root file system is built once with debootstrap from Debian's registry and kept under the lab
directory, keyed by what goes into it (suite, packages and their candidate versions, debootstrap's
own version): a new package version builds a new image. Each run boots a fresh copy of it, in
which virtmon's Debian package, built from the checkout, is installed with `apt install` as an
operator would. Everything a boot starts or mounts is ended when it is left, also on failure.

`python -m tests.host2.machine build` builds (or finds) the image and prints its directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
LAB = Path("/var/lib/virtmon-lab/host2")
IMAGES = LAB / "images"
SUITE = "bookworm"
# systemd as PID 1, and no more: the package's own dependencies come with `apt install`.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "ca-certificates")
# Where the operator put the downloaded package.
PACKAGE_DIR = "/root"
MACHINE = "virtmon-host2"
# No system bus outside: nothing to register with, and no scope unit to make.
NSPAWN = ("systemd-nspawn", "--register=no", "--keep-unit", "--quiet")


def candidate_versions() -> dict[str, str]:
    """The version apt would install of each package (and of debootstrap), from the host's lists."""
    names = (*packages(), "debootstrap")
    out = subprocess.run(["apt-cache", "policy", *names], capture_output=True, text=True,
                         check=True).stdout
    versions: dict[str, str] = {}
    package = ""
    for line in out.splitlines():
        if not line.startswith(" "):
            package = line.rstrip(":")
        elif line.strip().startswith("Candidate:"):
            versions[package] = line.split(":", 1)[1].strip()
    missing = set(names) - versions.keys()
    if missing:
        raise RuntimeError(f"apt knows no candidate for {sorted(missing)}: run apt-get update")
    return versions


def image_key(versions: dict[str, str]) -> str:
    """The image's name: a digest of the suite and every version that goes into it."""
    text = json.dumps({"suite": SUITE, "versions": versions}, sort_keys=True)
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


def build_image() -> Path:
    """The cached root file system for the current package versions, built if missing."""
    versions = candidate_versions()
    image = IMAGES / image_key(versions)
    if (image / "etc/os-release").exists():
        return image
    staging = image.with_name(image.name + ".building")
    remove_tree(staging)
    IMAGES.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(packages())}",
                        SUITE, str(staging)], check=True, stdout=subprocess.DEVNULL)
        (staging / "etc/hostname").write_text(f"{MACHINE}\n")
        # Each boot gets its own machine id (systemd makes one when the file is empty).
        (staging / "etc/machine-id").write_text("")
    except BaseException:
        remove_tree(staging)
        raise
    seconds = time.monotonic() - started
    (staging / "virtmon-image.json").write_text(json.dumps(
        {"versions": versions, "build_seconds": round(seconds, 1)}, indent=1))
    staging.rename(image)
    return image


def build_seconds(image: Path) -> float:
    """How long debootstrap took to build the image."""
    return float(json.loads((image / "virtmon-image.json").read_text())["build_seconds"])


def packages() -> tuple[str, ...]:
    """What the image holds."""
    return BASE_PACKAGES


def build_package(outdir: Path) -> Path:
    """virtmon's Debian package, built from the checkout as `make deb` builds it, in outdir."""
    subprocess.run([str(CHECKOUT / "packaging/deb/build"), str(CHECKOUT), str(outdir)],
                   check=True, stdout=subprocess.DEVNULL, timeout=900)
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


def _power_off(nspawn: subprocess.Popen[bytes]) -> None:
    """SIGTERM asks the container's systemd to shut down; SIGKILL if it does not in time."""
    if nspawn.poll() is None:
        nspawn.send_signal(signal.SIGTERM)
        try:
            nspawn.wait(timeout=60)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait(timeout=30)


@contextlib.contextmanager
def booted(root: Path, log: Path) -> Iterator[Booted]:
    """Boot root with systemd as PID 1 (no network but its own loopback, /dev/kvm bound in)."""
    started = time.monotonic()
    with log.open("wb") as console:
        nspawn = subprocess.Popen(
            [*NSPAWN, "-D", str(root), f"--machine={MACHINE}", "--private-network",
             "--bind=/dev/kvm", "--console=passive", "--boot"],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
    try:
        leader = _wait_until_up(nspawn, started + 120)
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
def second_host(workdir: Path, image: Path) -> Iterator[Booted]:
    """A booted copy of the image with virtmon's package installed; all removed afterwards.

    The package is installed in a first boot (its postinst enables and starts the units); the
    second boot starts virtmon as every boot of the host will.
    """
    root = workdir / "rootfs"
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(root)], check=True)
        package = build_package(workdir)
        fetch_dependencies(root, package)
        with booted(root, workdir / "install-console.log") as host:
            after_install = apt_install(host, package.name)
        with booted(root, workdir / "console.log") as host:
            host.package = package.name
            host.after_install = after_install
            yield host
    finally:
        remove_tree(root)


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
    print(build_image())


if __name__ == "__main__":
    main()
