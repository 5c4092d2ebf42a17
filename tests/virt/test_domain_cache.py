"""The domain XML cache: metadata labels, event-driven refresh, resync, and failures."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt
import pytest

from virtmon.events.model import Event
from virtmon.virt.calls import LibvirtCaller
from virtmon.virt.domain_cache import DomainInfoCache, MetadataLabels
from virtmon.virt.handle import SharedConnection

NOVA = "http://openstack.org/xmlns/libvirt/nova/1.1"


@dataclass
class Supervisor:
    """The two things the cache asks of the connection supervisor."""

    conn: SharedConnection | None
    connected: bool = True

    async def wait_connected(self) -> None:
        """Never called while connected."""


def event(kind: str, name: str, uuid: str) -> Event:
    """A domain event."""
    return Event(time=0.0, uri="test:///default", kind=kind, name=name, uuid=uuid, domain="x")


@pytest.fixture
def conn() -> Any:
    """A read-write connection to the test driver's shared default instance."""
    connection = libvirt.open("test:///default")
    yield connection
    connection.close()


def test_metadata_labels_read_namespaced_elements_and_attributes() -> None:
    """A path with a namespace prefix and a trailing /@attribute yields the attribute's value."""
    labels = MetadataLabels(
        {"project": "/domain/metadata/nova:instance/nova:owner/nova:project/@uuid",
         "flavor": "metadata/nova:instance/nova:flavor/@name",
         "missing": "metadata/nova:instance/nova:nothing"},
        {"nova": NOVA},
    )
    root = ET.fromstring(
        f"<domain><metadata><nova:instance xmlns:nova='{NOVA}'>"
        "<nova:flavor name='m1.small'/><nova:owner><nova:project uuid='p-1'>demo"
        "</nova:project></nova:owner></nova:instance></metadata></domain>"
    )
    assert labels.read(root) == {"project": "p-1", "flavor": "m1.small"}


async def test_resync_reads_every_domain_and_undefined_drops_one(conn: Any) -> None:
    """A resync fills the cache from XML; an undefined event drops the domain without a call."""
    cache = DomainInfoCache(Supervisor(SharedConnection(conn)), LibvirtCaller(),  # type: ignore[arg-type]
                            MetadataLabels({}, {}), resync_interval=600)
    await cache._refresh(cache.supervisor.conn)
    test = next(info for info in cache.info.values() if info.name == "test")
    assert test.os_type == "hvm" and test.persistent
    cache.on_event(event("lifecycle", "undefined", test.uuid))
    assert test.uuid not in cache.info


async def test_a_failed_refresh_keeps_what_was_marked() -> None:
    """When the refresh's call fails, the marked domains stay marked for the next try."""
    closed = SharedConnection(libvirt.open("test:///default"))
    closed.close([])  # every later call on it is refused
    cache = DomainInfoCache(Supervisor(closed), LibvirtCaller(),  # type: ignore[arg-type]
                            MetadataLabels({}, {}), resync_interval=600)
    cache._resync_due = False
    cache.on_event(event("metadata_change", "element", "u-1"))
    with pytest.raises(Exception, match="closing"):
        await cache._refresh(closed)
    assert cache._dirty == {"u-1"}
    cache._resync_due = True
    with pytest.raises(Exception, match="closing"):
        await cache._refresh(closed)
    assert cache._resync_due
