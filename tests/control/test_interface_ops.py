"""Host interface operations on libvirt's test driver (test:///default), through the socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import daemon_config, running_daemon
from virtmon.ctl.client import ControlClient, Problem

URI = "test:///default"
IFACE_XML = """<interface type='ethernet' name='{name}'>
  <start mode='onboot'/>
  <mac address='{mac}'/>
  <protocol family='ipv4'><ip address='192.0.2.7' prefix='24'/></protocol>
</interface>"""


@pytest.fixture
async def client(short_tmp: Path) -> AsyncIterator[ControlClient]:
    """A client of a daemon on the test driver with writes allowed."""
    cfg = daemon_config(short_tmp, libvirt={"uri": URI}, control={"allow_write": True})
    async with running_daemon(cfg):
        yield ControlClient(str(short_tmp / "control.sock"), timeout=30)


async def op(client: ControlClient, name: str, **args: Any) -> Any:
    """One operation's result, from a worker thread."""
    return await asyncio.to_thread(client.call, name, **args)


async def test_define_create_destroy_undefine(client: ControlClient) -> None:
    """An interface defined from XML is listed, started, stopped, looked up by MAC, undefined."""
    xml = IFACE_XML.format(name="vmtest0", mac="52:54:00:aa:bb:01")
    defined = await op(client, "interface.define", xml=xml)
    assert defined == {"name": "vmtest0", "mac": "52:54:00:aa:bb:01", "active": False}
    try:
        names = {i["name"] for i in (await op(client, "interface.list"))["interfaces"]}
        assert "vmtest0" in names
        await op(client, "interface.create", interface="vmtest0")
        assert await op(client, "interface.is_active", interface="52:54:00:aa:bb:01") is True
        assert "vmtest0" in await op(client, "interface.xml", interface="vmtest0")
        await op(client, "interface.destroy", interface="vmtest0")
        assert (await op(client, "interface.lookup", interface="vmtest0"))["active"] is False
    finally:
        await op(client, "interface.undefine", interface="vmtest0")
    with pytest.raises(Problem) as caught:
        await op(client, "interface.lookup", interface="vmtest0")
    assert caught.value.status == 404
    assert caught.value.document["libvirt_error"] == "VIR_ERR_NO_INTERFACE"


async def test_change_rollback_and_commit(client: ControlClient) -> None:
    """change_begin + define + rollback forgets the interface; with commit it stays."""
    await op(client, "interface.change_begin")
    await op(client, "interface.define",
             xml=IFACE_XML.format(name="vmtest1", mac="52:54:00:aa:bb:02"))
    await op(client, "interface.change_rollback")
    with pytest.raises(Problem) as caught:
        await op(client, "interface.lookup", interface="vmtest1")
    assert caught.value.status == 404
    await op(client, "interface.change_begin")
    await op(client, "interface.define",
             xml=IFACE_XML.format(name="vmtest2", mac="52:54:00:aa:bb:03"))
    await op(client, "interface.change_commit")
    try:
        assert (await op(client, "interface.lookup", interface="vmtest2"))["name"] == "vmtest2"
    finally:
        await op(client, "interface.undefine", interface="vmtest2")


async def test_commit_without_begin_is_409(client: ControlClient) -> None:
    """A commit with no transaction open is the caller's mistake: 409 (operation invalid)."""
    with pytest.raises(Problem) as caught:
        await op(client, "interface.change_commit")
    assert caught.value.status == 409, caught.value.document
