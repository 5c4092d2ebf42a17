"""Removing and purging virtmon's Debian package (the last tests of the run: they uninstall it).

remove keeps everything of the operator's (configuration, state, user); purge leaves nothing."""

from __future__ import annotations

from tests.host2.machine import PACKAGE_DIR, Booted
from tests.host2.test_service import ownership

# Every place a trace of the package could stay: units and their enablement, the user's files.
LEFTOVERS = ("/etc/virtmon /var/lib/virtmon /run/virtmon /opt/virtmon /usr/bin/virtmon"
             " /usr/bin/virtmonctl /lib/systemd/system/virtmon.service"
             " /lib/systemd/system/virtmon.socket /usr/lib/sysusers.d/virtmon.conf"
             " /usr/lib/tmpfiles.d/virtmon.conf")


def leftovers(host: Booted) -> list[str]:
    """Paths of the package or its units that exist, enablement links and masks included."""
    found = host.run(f"ls -d {LEFTOVERS} 2>/dev/null; find /etc/systemd /var/lib/systemd"
                     " -name 'virtmon*'", check=False).stdout
    return found.split()


def test_remove_stops_virtmon_and_keeps_configuration_state_and_user(host2: Booted) -> None:
    """`apt remove virtmon`: the daemon stops and its code goes; /etc/virtmon with the edited
    configuration, the journal database and the user stay."""
    host2.run("DEBIAN_FRONTEND=noninteractive apt-get remove -y virtmon")
    assert host2.run("systemctl is-active virtmon.service virtmon.socket",
                     check=False).stdout.split() == ["inactive", "inactive"]
    assert host2.run("systemctl show -p MainPID --value virtmon.service").stdout.strip() == "0"
    assert host2.run("test ! -e /opt/virtmon && test ! -e /usr/bin/virtmon").returncode == 0
    assert ownership(host2, "/etc/virtmon/virtmon.toml") == "root:virtmon:640"
    assert host2.run("grep -q '^interval = 7.0 ' /etc/virtmon/virtmon.toml").returncode == 0
    assert ownership(host2, "/var/lib/virtmon") == "root:virtmon:750"
    assert host2.run("test -s /var/lib/virtmon/virtmon.db").returncode == 0
    assert host2.run("getent passwd virtmon && getent group virtmon").returncode == 0
    assert host2.run("dpkg-query -W -f='${Status}' virtmon").stdout == \
        "deinstall ok config-files"


def test_purge_leaves_no_unit_user_or_directory(host2: Booted) -> None:
    """`dpkg --purge virtmon` after remove: no unit (nor enablement or mask), user, group,
    statoverride or directory of virtmon's is left."""
    host2.run("dpkg --purge virtmon")
    assert leftovers(host2) == []
    assert host2.run("getent passwd virtmon", check=False).returncode == 2
    assert host2.run("getent group virtmon", check=False).returncode == 2
    assert host2.run("dpkg-statoverride --list '/etc/virtmon/*'", check=False).stdout == ""
    assert "virtmon" not in host2.run("systemctl list-unit-files --no-pager").stdout


def test_reinstall_after_purge_starts_again(host2: Booted) -> None:
    """The same package installed again after the purge is a first install: READY again."""
    host2.run(f"cd {PACKAGE_DIR} && DEBIAN_FRONTEND=noninteractive apt install -y"
              f" ./{host2.package}", timeout=600)
    assert host2.run("systemctl is-active virtmon.service virtmon.socket").stdout.split() \
        == ["active", "active"]
    assert ownership(host2, "/run/virtmon/virtmon.sock") == "root:virtmon:660"
