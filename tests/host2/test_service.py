"""virtmon under a real systemd 252: the hardened unit as installed, on a booted Debian 12.

The tests run in file order on one container: boot, restart, the non-root drop-in added and
removed. Each checks that the control socket stays usable by group virtmon.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.host2.machine import Booted
from tests.systemd.test_units import assert_documented_scores

SOCKET = "/run/virtmon/virtmon.sock"
EXAMPLES = "/usr/share/doc/virtmon/examples"
DROP_IN = "/etc/systemd/system/virtmon.service.d/non-root.conf"
SHIPPED = Path(__file__).resolve().parents[2] / "systemd"
# Callers that are neither root nor virtmon: one in group virtmon, one not (made by the fixture).
MEMBER, OUTSIDER = "member", "outsider"


def ownership(host: Booted, path: str) -> str:
    """user:group:mode of a path inside the container."""
    return host.run(f"stat -c %U:%G:%a {path}").stdout.strip()


def status_as(host: Booted, user: str) -> subprocess.CompletedProcess[str]:
    """`virtmonctl status` run by an unprivileged user of the container, with its groups."""
    return host.run(f"HOME=/tmp setpriv --reuid={user} --regid={user} --init-groups "
                    "virtmonctl status", check=False)


def service(host: Booted) -> dict[str, str]:
    """A few of `systemctl show virtmon.service`'s properties."""
    out = host.run("systemctl show -p ActiveState -p SubState -p MainPID -p DropInPaths "
                   "-p FragmentPath -p StatusText virtmon.service").stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def restart(host: Booted) -> None:
    """`systemctl restart virtmon` (it returns once READY=1 came, Type=notify)."""
    host.run("systemctl daemon-reload && systemctl restart virtmon.service")
    assert service(host)["ActiveState"] == "active"


def process_user(host: Booted) -> str:
    """The user virtmon's main process runs as."""
    return host.run(f"stat -c %U /proc/{service(host)['MainPID']}").stdout.strip()


def assert_socket_serves_group_virtmon(host: Booted) -> None:
    """root:virtmon (or virtmon:virtmon without root) 0660, and only group members get in."""
    assert ownership(host, SOCKET).split(":")[1:] == ["virtmon", "660"]
    member = status_as(host, MEMBER)
    assert member.returncode == 0 and "libvirt" in member.stdout, member.stdout + member.stderr
    outsider = status_as(host, OUTSIDER)
    assert outsider.returncode != 0 and "ermission denied" in outsider.stderr, outsider.stderr


def test_service_reached_ready_at_boot_under_the_shipped_hardened_unit(host2: Booted) -> None:
    """Started by the boot (which waits for it), virtmon is active: READY=1 came; unit shipped."""
    properties = service(host2)
    assert (properties["ActiveState"], properties["SubState"]) == ("active", "running")
    unit = host2.run(f"cat {properties['FragmentPath']}").stdout
    assert unit == (SHIPPED / "virtmon.service").read_text()
    assert properties["DropInPaths"] == ""
    assert properties["StatusText"], "no STATUS= line"
    assert process_user(host2) == "root"


def test_group_virtmon_uses_the_control_socket_after_boot(host2: Booted) -> None:
    """After boot the socket (virtmon.socket's) is root:virtmon 0660 and serves group members."""
    assert ownership(host2, SOCKET) == "root:virtmon:660"
    assert_socket_serves_group_virtmon(host2)


def test_directories_keep_the_tmpfiles_owner_and_mode(host2: Booted) -> None:
    """/etc, /var/lib and /run/virtmon stay root:virtmon with tmpfiles' modes once virtmon ran."""
    assert ownership(host2, "/etc/virtmon") == "root:virtmon:750"
    assert ownership(host2, "/var/lib/virtmon") == "root:virtmon:750"
    assert ownership(host2, "/run/virtmon") == "root:virtmon:755"


def test_group_virtmon_uses_the_control_socket_after_a_restart(host2: Booted) -> None:
    """`systemctl restart virtmon` leaves the socket root:virtmon 0660, usable by the group."""
    restart(host2)
    assert ownership(host2, SOCKET) == "root:virtmon:660"
    assert_socket_serves_group_virtmon(host2)


def test_socket_keeps_group_virtmon_as_the_non_root_drop_in_comes_and_goes(host2: Booted) -> None:
    """With non-root.conf virtmon runs as user virtmon; removed, as root; the group stays."""
    host2.run(f"install -D -m 0644 {EXAMPLES}/non-root.conf {DROP_IN}")
    restart(host2)
    assert process_user(host2) == "virtmon"
    assert_socket_serves_group_virtmon(host2)
    assert ownership(host2, "/var/lib/virtmon") == "virtmon:virtmon:750"
    host2.run(f"rm {DROP_IN}")
    restart(host2)
    assert process_user(host2) == "root"
    assert ownership(host2, SOCKET) == "root:virtmon:660"
    assert_socket_serves_group_virtmon(host2)
    assert ownership(host2, "/var/lib/virtmon") == "root:virtmon:750"
    assert ownership(host2, "/var/lib/virtmon/virtmon.db").startswith("root:virtmon:")


def test_the_daemons_own_socket_keeps_group_virtmon_without_virtmon_socket(host2: Booted) -> None:
    """Without virtmon.socket virtmon binds the socket and gives it control.socket_group itself:
    group virtmon as root, as user virtmon (non-root drop-in), and as root again."""
    host2.run("systemctl disable --now virtmon.socket")
    try:
        restart(host2)
        assert host2.run("systemctl is-active virtmon.socket", check=False).stdout.strip() \
            == "inactive"
        assert ownership(host2, SOCKET) == "root:virtmon:660"
        assert_socket_serves_group_virtmon(host2)
        host2.run(f"install -D -m 0644 {EXAMPLES}/non-root.conf {DROP_IN}")
        restart(host2)
        assert ownership(host2, SOCKET) == "virtmon:virtmon:660"
        assert_socket_serves_group_virtmon(host2)
        host2.run(f"rm {DROP_IN}")
        restart(host2)
        assert ownership(host2, SOCKET) == "root:virtmon:660"
        assert_socket_serves_group_virtmon(host2)
    finally:
        host2.run(f"rm -f {DROP_IN} && systemctl daemon-reload"
                  " && systemctl stop virtmon.service && systemctl enable --now virtmon.socket"
                  " && systemctl start virtmon.service")


def test_the_journal_has_no_exec_directory_mode_warning(host2: Booted) -> None:
    """Not one start of this boot logged "already exists but the mode is different"."""
    journal = host2.run("journalctl --boot --no-pager -o cat").stdout
    assert "Started virtmon.service" in journal
    assert "mode is different" not in journal


def live_score(host: Booted) -> float:
    """`systemd-analyze security virtmon.service` of the running system: its overall level."""
    out = host.run("systemd-analyze security --no-pager virtmon.service").stdout
    match = re.search(r"Overall exposure level for virtmon.service: ([0-9.]+)", out)
    assert match, out
    return float(match.group(1))


def test_the_documented_security_scores_are_what_systemd_says(host2: Booted) -> None:
    """The booted systemd's own exposure levels, as root and non-root, are the docs' figures
    (the same as the unit-file test's offline ones)."""
    as_root = live_score(host2)
    host2.run(f"install -D -m 0644 {EXAMPLES}/non-root.conf {DROP_IN}"
              " && systemctl daemon-reload")
    try:
        non_root = live_score(host2)
    finally:
        host2.run(f"rm {DROP_IN} && systemctl daemon-reload")
    assert_documented_scores(as_root, non_root)
