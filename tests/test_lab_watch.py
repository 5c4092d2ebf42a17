"""The lab watch's comparison: which of the lab's vital processes died or were replaced."""

from __future__ import annotations

from tests.conftest import lab_changes


def test_a_gone_or_replaced_process_is_named_and_an_unseen_one_is_not() -> None:
    """libvirtd replaced and virtlogd gone are changes, with both pids; a QEMU that was not
    running before is not; nothing changed is no change."""
    before = {"libvirtd": 10, "virtlogd": 11, "QEMU of lab-0": None, "QEMU of lab-1": 13}
    now = {"libvirtd": 20, "virtlogd": None, "QEMU of lab-0": 30, "QEMU of lab-1": 13}
    assert lab_changes(before, now) == ["libvirtd (pid 10 -> 20)", "virtlogd (pid 11 -> gone)"]
    assert lab_changes(before, before) == []
