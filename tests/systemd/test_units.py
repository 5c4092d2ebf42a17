"""Shipped systemd files, checked by systemd's tools: verify, security, sysusers, tmpfiles."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.tools import need
from virtmon import cli, config

UNITS = Path(__file__).resolve().parents[2] / "systemd"
VIRTMON = Path(sys.executable).parent / "virtmon"



def unit_copy(directory: Path, name: str) -> Path:
    """The shipped file with ExecStart pointing at this venv's virtmon (verify checks it exists)."""
    text = (UNITS / name).read_text(encoding="utf-8")
    text = re.sub(r"^ExecStart=/usr/bin/virtmon", f"ExecStart={VIRTMON}", text, flags=re.M)
    target = directory / name
    target.write_text(text, encoding="utf-8")
    return target


def verify(directory: Path, *units: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` with the directory first in the unit path (for drop-ins)."""
    return subprocess.run(
        [need("systemd-analyze"), "verify", "--man=no", *(str(directory / u) for u in units)],
        capture_output=True, text=True, timeout=60, check=False, cwd=directory,
        env={"SYSTEMD_UNIT_PATH": f"{directory}:", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def our_warnings(result: subprocess.CompletedProcess[str], directory: Path) -> list[str]:
    """Diagnostics about our files (verify also loads, and may criticise, the system's units)."""
    text = result.stdout + result.stderr
    return [line for line in text.splitlines() if str(directory) in line or "virtmon" in line]


def test_service_and_socket_pass_systemd_analyze_verify(short_tmp: Path) -> None:
    """virtmon.service and virtmon.socket: exit 0 and not one diagnostic about them."""
    unit_copy(short_tmp, "virtmon.service")
    unit_copy(short_tmp, "virtmon.socket")
    result = verify(short_tmp, "virtmon.service", "virtmon.socket")
    assert result.returncode == 0, result.stderr
    assert our_warnings(result, short_tmp) == []


def test_non_root_and_wants_drop_ins_pass_verify_and_are_really_loaded(short_tmp: Path) -> None:
    """The drop-ins verify cleanly, and a canary drop-in's warning shows the directory is read."""
    unit_copy(short_tmp, "virtmon.service")
    drop_ins = short_tmp / "virtmon.service.d"
    drop_ins.mkdir()
    for name in ("non-root.conf", "libvirt-wants.conf"):
        unit_copy(drop_ins, name)
    result = verify(short_tmp, "virtmon.service")
    assert result.returncode == 0, result.stderr
    assert our_warnings(result, short_tmp) == []
    (drop_ins / "zz-canary.conf").write_text("[Service]\nCanaryKey=1\n")
    canary = verify(short_tmp, "virtmon.service")
    assert any("CanaryKey" in line for line in our_warnings(canary, short_tmp))


def exposure(unit: Path) -> float:
    """`systemd-analyze security --offline=yes`: the overall exposure (0 best, 10 worst)."""
    result = subprocess.run(
        [need("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def documented_scores() -> tuple[float, float]:
    """The exposure levels docs/install.md states: as root, and with the non-root drop-in."""
    text = " ".join((UNITS.parent / "docs/install.md").read_text(encoding="utf-8").split())
    match = re.search(r"`systemd-analyze security virtmon.service` rates it ([0-9]+\.[0-9]) "
                      r"\(\"OK\"\); with the non-root drop-in, ([0-9]+\.[0-9])", text)
    assert match, "the scores' sentence moved in docs/install.md"
    return float(match.group(1)), float(match.group(2))


def assert_documented_scores(root: float, non_root: float) -> None:
    """Both documents state these exposure levels (install.md, and non-root.md's table)."""
    assert (root, non_root) == documented_scores()
    non_root_doc = " ".join((UNITS.parent / "docs/non-root.md").read_text(encoding="utf-8").split())
    assert f"`systemd-analyze security`: {non_root} instead of {root}" in non_root_doc


def test_the_documented_exposure_scores_are_systemds(short_tmp: Path) -> None:
    """systemd's exposure levels, as root and with the non-root drop-in, are the docs' figures."""
    root = exposure(unit_copy(short_tmp, "virtmon.service"))
    nonroot_dir = short_tmp / "nonroot"
    nonroot_dir.mkdir()
    service = unit_copy(nonroot_dir, "virtmon.service")
    drop_in = (UNITS / "non-root.conf").read_text().split("[Service]", 1)[1]
    # Merged at the end of [Service], where the drop-in's settings would apply.
    service.write_text(service.read_text().replace("[Install]\n", drop_in + "\n[Install]\n", 1))
    assert_documented_scores(root, exposure(service))


def test_service_essentials() -> None:
    """Type=notify, watchdog, reload by SIGHUP, no Requires= on libvirt, state/runtime dirs."""
    text = (UNITS / "virtmon.service").read_text()
    keys = re.findall(r"^(\w+)=(.*)$", text, flags=re.M)
    values: dict[str, list[str]] = {}
    for key, value in keys:
        values.setdefault(key, []).append(value)
    assert values["Type"] == ["notify"]
    assert values["WatchdogSec"] and values["Restart"] == ["on-failure"]
    assert values["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "Requires" not in values and "BindsTo" not in values and "PartOf" not in values
    after = " ".join(values["After"]).split()
    for unit in ("libvirtd.service", "libvirtd.socket", "virtqemud.service", "virtqemud.socket"):
        assert unit in after
    assert values["StateDirectory"] == ["virtmon"] and values["RuntimeDirectory"] == ["virtmon"]
    assert values["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert values["SystemCallFilter"] == ["@system-service"]
    assert values["ProtectSystem"] == ["strict"] and values["NoNewPrivileges"] == ["yes"]
    assert values["RestartPreventExitStatus"] == [str(config.EX_CONFIG)]


def test_non_root_drop_in_gives_no_libvirt_group() -> None:
    """non-root.conf has no SupplementaryGroups=: group libvirt would open libvirt's rw socket."""
    keys = re.findall(r"^(\w+)=", (UNITS / "non-root.conf").read_text(), flags=re.M)
    assert "SupplementaryGroups" not in keys
    assert keys.count("User") == keys.count("Group") == 1


def test_exec_directory_modes_are_the_tmpfiles_ones() -> None:
    """Each *DirectoryMode= is tmpfiles' mode for that directory (else a warning, or a chmod)."""
    text = (UNITS / "virtmon.service").read_text()
    modes = dict(re.findall(r"^(\w+)DirectoryMode=(\d+)$", text, flags=re.M))
    tmpfiles = {path: mode for kind, path, mode, *_ in (
        line.split() for line in (UNITS / "virtmon.tmpfiles.conf").read_text().splitlines()
        if line.startswith("d "))}
    assert modes == {"State": tmpfiles["/var/lib/virtmon"], "Runtime": tmpfiles["/run/virtmon"],
                     "Configuration": tmpfiles["/etc/virtmon"]}


def test_exec_start_and_socket_match_the_cli_and_the_config_defaults() -> None:
    """ExecStart lines parse with virtmon's own parser; ListenStream is control.socket's default."""
    for name in ("virtmon.service", "non-root.conf"):
        for line in re.findall(r"^ExecStart=(.+)$", (UNITS / name).read_text(), flags=re.M):
            argv = shlex.split(line)
            assert argv[0] == "/usr/bin/virtmon"
            cli.parser().parse_args(argv[1:])
    socket_unit = (UNITS / "virtmon.socket").read_text()
    listen = re.search(r"^ListenStream=(.+)$", socket_unit, flags=re.M)
    assert listen and listen.group(1) == config.SCHEMA["control"]["socket"].default
    assert "FileDescriptorName=control" in socket_unit


def test_sysusers_and_tmpfiles_create_the_user_and_directories(short_tmp: Path) -> None:
    """systemd-sysusers and systemd-tmpfiles --root: user virtmon, group-owned 0750 directories."""
    need("systemd-sysusers")
    need("systemd-tmpfiles")
    (short_tmp / "etc").mkdir()
    subprocess.run(["systemd-sysusers", f"--root={short_tmp}",
                    str(UNITS / "virtmon.sysusers.conf")], check=True, capture_output=True)
    passwd = (short_tmp / "etc/passwd").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("virtmon:"))
    assert user[5] == "/var/lib/virtmon" and user[6] == "/usr/sbin/nologin"
    gid = next(int(line.split(":")[2]) for line in (short_tmp / "etc/group").read_text()
               .splitlines() if line.startswith("virtmon:"))
    subprocess.run(["systemd-tmpfiles", "--create", f"--root={short_tmp}",
                    str(UNITS / "virtmon.tmpfiles.conf")], check=True, capture_output=True)
    for path, mode in (("etc/virtmon", 0o750), ("var/lib/virtmon", 0o750),
                       ("run/virtmon", 0o755)):
        info = (short_tmp / path).stat()
        assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (mode, 0, gid), path
