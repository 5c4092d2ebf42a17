"""virtmon's Debian package installed with `apt install ./virtmon_*.deb` on a booted Debian 12:
what its maintainer scripts made, and the service it started."""

from __future__ import annotations

from tests.host2.machine import Booted
from tests.host2.test_service import SOCKET, ownership, service

CONFIG = "/etc/virtmon/virtmon.toml"


def test_apt_install_started_the_hardened_service_to_ready(host2: Booted) -> None:
    """Right after `apt install` (first boot) the units are enabled and virtmon is active with
    its STATUS line: postinst started it, and READY=1 came under the hardened unit."""
    state = host2.after_install
    assert state["virtmon.service:ActiveState"] == "active"
    assert state["virtmon.service:SubState"] == "running"
    assert state["virtmon.service:StatusText"], "no STATUS= line"
    assert state["virtmon.service:UnitFileState"] == "enabled"
    assert (state["virtmon.socket:ActiveState"], state["virtmon.socket:UnitFileState"]) \
        == ("active", "enabled")


def test_the_package_made_the_user_directories_and_socket(host2: Booted) -> None:
    """sysusers' system user and group, tmpfiles' directories, the configuration readable by
    group virtmon only (a statoverride), and the control socket root:virtmon 0660."""
    user = host2.run("getent passwd virtmon").stdout.split(":")
    assert int(user[2]) < 1000 and user[5:] == ["/var/lib/virtmon", "/usr/sbin/nologin\n"]
    assert ownership(host2, CONFIG) == "root:virtmon:640"
    assert host2.run(f"dpkg-statoverride --list {CONFIG}").stdout.split() \
        == ["root", "virtmon", "640", CONFIG]
    assert ownership(host2, "/etc/virtmon") == "root:virtmon:750"
    assert ownership(host2, SOCKET) == "root:virtmon:660"
    assert host2.run("virtmon version").returncode == 0
    conffiles = host2.run("dpkg-query -W -f='${Conffiles}' virtmon").stdout
    assert CONFIG in conffiles


def test_the_package_verifies_and_ships_no_bytecode_it_did_not_compile(host2: Booted) -> None:
    """`dpkg --verify` finds every shipped file as shipped; postinst compiled the bytecode."""
    assert host2.run("dpkg --verify virtmon").stdout == ""
    listed = host2.run("dpkg -L virtmon").stdout
    assert "__pycache__" not in listed
    assert host2.run("find /opt/virtmon -name '*.pyc' | head -1").stdout.strip()


def test_systemctl_reload_applies_an_edited_configuration(host2: Booted) -> None:
    """An operator edits the conffile and runs `systemctl reload virtmon`: the same process
    applies the new collection interval."""
    before = service(host2)["MainPID"]
    host2.run(f"sed -i 's/^interval = 15.0 /interval = 7.0 /' {CONFIG}"
              f" && grep -q '^interval = 7.0 ' {CONFIG}")
    host2.run("systemctl reload virtmon.service")
    properties = service(host2)
    assert (properties["ActiveState"], properties["MainPID"]) == ("active", before)
    journal = host2.run("journalctl --no-pager -o cat -u virtmon.service").stdout
    done = [line for line in journal.splitlines() if "virtmon.reload.done" in line]
    assert done and "collect.interval" in done[-1], journal[-3000:]
