"""The lab's access rules: a non-root user in the libvirt group connects without polkit."""

from __future__ import annotations

import subprocess

import pytest

from tests.lab import lab as lab_module

pytestmark = pytest.mark.lab


def as_lab_user(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command as the lab's unprivileged test user."""
    return subprocess.run(["runuser", "-u", lab_module.TEST_USER, "--", *argv],
                          capture_output=True, text=True, timeout=60)


def test_a_libvirt_group_member_reads_and_writes_without_polkit(lab: str) -> None:
    """The test user (group libvirt, not root) lists domains read-write through the lab socket."""
    listed = as_lab_user("virsh", "-c", lab, "list", "--all")
    assert listed.returncode == 0, listed.stderr
    assert "lab-0" in listed.stdout
    # A write (a live title; the description marks lab domains) is refused on a read-only
    # connection: it proves the user reached the read-write socket (group libvirt, auth none).
    wrote = as_lab_user("virsh", "-c", lab, "desc", "lab-0", "--live", "--title", "lab")
    assert wrote.returncode == 0, wrote.stderr
    refused = as_lab_user("virsh", "-r", "-c", lab, "desc", "lab-0", "--live", "--title", "lab")
    assert refused.returncode != 0


def test_the_admin_socket_stays_root_only(lab: str) -> None:
    """The test user cannot reach libvirtd's admin socket (root-only by the lab config)."""
    denied = as_lab_user("virt-admin", "-c", lab_module.ADMIN_URI, "srv-list")
    assert denied.returncode != 0
