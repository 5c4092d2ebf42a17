"""Host facts (node info, CPU map, host interfaces) are re-read every few cycles, not every one."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import libvirt

from tests.conftest import daemon_config, running_daemon
from tests.waiting import next_cycle
from virtmon.collectors.base import FACTS_EVERY
from virtmon.collectors.snapshot import HostInterface
from virtmon.virt.handle import is_local
from virtmon.virt.stats import HostFacts, SnapshotRequest, read_host

IFACE_XML = """<interface type='ethernet' name='facts0'>
  <start mode='onboot'/><mac address='aa:bb:cc:00:00:01'/>
</interface>"""


def test_given_facts_are_used_instead_of_asking_again() -> None:
    """read_host with facts returns them; without, it reads the host itself."""
    conn = libvirt.openReadOnly("test:///default")
    try:
        request = SnapshotRequest("test:///default", 0, frozenset(), {})
        fresh = read_host(conn, request)
        assert fresh.interfaces and fresh.node and fresh.node.info
        planted = HostFacts(("model", 1, 2, 3, 1, 1, 1, 1), (True, True),
                            (HostInterface("planted", "00:00:00:00:00:01", True),))
        reused = read_host(conn, dataclasses.replace(request, facts=planted))
        assert reused.interfaces == planted.interfaces
        assert reused.node is not None and reused.node.info == planted.info
        assert reused.node.cpu_total is not None  # statistics are still read every cycle
    finally:
        conn.close()


async def test_a_new_interface_shows_within_facts_every_cycles(short_tmp: Path) -> None:
    """An interface defined after a refresh appears once the facts are re-read, not before."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        collect={"interval": 0.5, "deadline_ratio": 1.0,
                                 "collectors": {"admin": False}})
    writer = await asyncio.to_thread(libvirt.open, "test:///default")
    try:
        async with running_daemon(cfg) as daemon:
            scheduler = daemon.scheduler
            while scheduler._facts_age != 1:
                await next_cycle(scheduler)
            iface = await asyncio.to_thread(writer.interfaceDefineXML, IFACE_XML, 0)
            seen_at, fresh = None, 0
            while fresh < 2 * FACTS_EVERY:
                previous = scheduler.snapshot
                await next_cycle(scheduler)
                if scheduler.snapshot is previous:
                    continue  # overran on a loaded machine: read nothing, counts for nothing
                fresh += 1
                if b'interface="facts0"' in scheduler.exposition.text:
                    seen_at = fresh
                    break
            assert seen_at is not None and 1 < seen_at <= FACTS_EVERY
            await asyncio.to_thread(iface.undefine)
    finally:
        await asyncio.to_thread(writer.close)


def test_only_a_uri_in_process_or_over_a_unix_socket_without_a_host_is_local() -> None:
    """Local (this host's clocks, a socket that closes when libvirtd dies): no transport or
    +unix, and no host; TCP, TLS, SSH, a host name, an unreadable or an empty URI are not."""
    assert is_local("qemu:///system") and is_local("test:///default")
    assert is_local("test+unix:///default?socket=/tmp/x/libvirt-sock")
    assert not is_local("qemu+ssh://hv2/system") and not is_local("qemu://hv2/system")
    assert not is_local("qemu+ssh:///system") and not is_local("qemu+tcp:///system")
    assert not is_local("qemu+unix://hv2/system") and not is_local("qemu://[::1")
    assert not is_local("")
