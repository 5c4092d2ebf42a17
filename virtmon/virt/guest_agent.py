"""The guest-agent poller: asks each connected guest agent what the guest knows, on its own rhythm.

Agent calls go through QEMU to a program inside the guest, which may be slow, stopped or gone;
none of that may touch the collection cycle. So the poller has everything of its own: its
interval (``collect.guest_agent_interval``), a caller with its own capacity, deadline and bound
on abandoned calls, and a pool of connections (libvirt refuses agent calls on a read-only
connection, so these are read-write; never the events connection). Each domain's poll is one
worker call with a deadline (``collect.guest_agent_timeout``); at most
``collect.guest_agent_concurrency`` run at once. A domain whose poll overran is not polled again
until that call has returned in libvirt: it stays down (``skipped``) instead of piling calls up.

Only domains whose agent is connected are polled: read from each running domain's live XML
(the agent channel's ``state``) when a connection is made, then kept by ``agent_lifecycle``
events. A domain without an agent is never asked anything.

The last results join every cycle's exposition (a :class:`~virtmon.scheduler.MetricSource`);
virtmon/collectors/guest_agent.py turns them into families.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import libvirt
import structlog
from anyio.abc import TaskStatus

from virtmon.collectors.guest_agent import AgentState, GuestReading, guest_agent_families
from virtmon.component import Restart
from virtmon.events.model import Event
from virtmon.exposition.family import MetricFamily
from virtmon.virt.calls import CallTimeout, LibvirtCaller
from virtmon.virt.connection import ConnectionSupervisor
from virtmon.virt.handle import ConnectionSettings
from virtmon.virt.pool import ConnectionPool
from virtmon.virt.rounds import run_rounds

if TYPE_CHECKING:
    from virtmon.config import CollectConfig

log = structlog.get_logger("virtmon.virt.guest_agent", component="guest_agent")

AGENT_CHANNEL = "org.qemu.guest_agent.0"
# The guest-info groups asked for: not disks and interfaces (the addresses come from
# virDomainInterfaceAddresses, which every libvirt with an agent has), and the load averages
# where the binding knows the group (libvirt 11 and later).
GUEST_INFO_TYPES = (libvirt.VIR_DOMAIN_GUEST_INFO_USERS | libvirt.VIR_DOMAIN_GUEST_INFO_OS
                    | libvirt.VIR_DOMAIN_GUEST_INFO_TIMEZONE
                    | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
                    | libvirt.VIR_DOMAIN_GUEST_INFO_FILESYSTEM
                    | getattr(libvirt, "VIR_DOMAIN_GUEST_INFO_LOAD", 0))
# Errors that mean the agent itself did not answer (the poll fails); any other error of the
# address or time call means the guest's agent lacks that command (that part is left out).
AGENT_DOWN = frozenset(getattr(libvirt, name) for name in (
    "VIR_ERR_AGENT_UNRESPONSIVE", "VIR_ERR_AGENT_UNSYNCED", "VIR_ERR_AGENT_COMMAND_TIMEOUT",
    "VIR_ERR_NO_DOMAIN", "VIR_ERR_OPERATION_INVALID") if hasattr(libvirt, name))
# Lifecycle events after which a domain has no agent until it says it connected.
GONE = frozenset({"stopped", "undefined"})


def agent_connected(xml: str) -> bool:
    """Whether a live domain XML shows the guest agent's channel connected."""
    for target in ET.fromstring(xml).iterfind("./devices/channel/target"):
        if target.get("name") == AGENT_CHANNEL:
            return target.get("state") == "connected"
    return False


def connected_agents(conn: Any) -> dict[str, str]:
    """UUID -> name of every running domain whose agent is connected (blocking: one XML read
    per running domain, no agent call)."""
    found = {}
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            if agent_connected(dom.XMLDesc(0)):
                found[dom.UUIDString()] = dom.name()
        except libvirt.libvirtError:
            continue  # stopped or undefined since the listing
    return found


def _unless_missing(call: Callable[[], Any]) -> Any:
    """The call's result; None when the agent lacks the command (the agent not answering
    fails the whole poll)."""
    try:
        return call()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in AGENT_DOWN:
            raise
        return None


def read_guest(conn: Any, uuid: str, clock: Callable[[], float] = time.time) -> GuestReading:
    """One poll of a domain's agent (blocking): guest info, addresses, and the guest's clock
    against ours, read around the call."""
    dom = conn.lookupByUUIDString(uuid)
    info = dom.guestInfo(GUEST_INFO_TYPES, 0)
    addresses = _unless_missing(lambda: dom.interfaceAddresses(
        libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0))
    before = clock()
    guest_time = _unless_missing(lambda: dom.getTime(0))
    after = clock()
    offset = (None if guest_time is None else
              guest_time["seconds"] + guest_time["nseconds"] * 1e-9 - (before + after) / 2)
    return GuestReading(info=info, addresses=addresses or {}, clock_offset=offset)


class GuestAgentPoller:
    """Polls the connected guest agents every ``guest_agent_interval``; a ``MetricSource``."""

    def __init__(self, supervisor: ConnectionSupervisor, settings: ConnectionSettings,
                 collect: CollectConfig, clock: Callable[[], float] = time.time) -> None:
        self.supervisor = supervisor
        self.clock = clock
        self.concurrency = collect.guest_agent_concurrency
        self.caller = LibvirtCaller(capacity=self.concurrency,
                                    max_abandoned=collect.max_abandoned_calls)
        # One connection per poll that may run, plus one per poll that may hang (ADR 0001).
        # Read-write only because libvirt requires it of agent commands; the polls only read.
        self.pool = ConnectionPool(replace(settings, readonly=False),
                                   self.concurrency + collect.max_abandoned_calls, reads=True)
        self._apply(collect)
        self.connected: dict[str, str] = {}  # UUID -> name, agents known to be connected
        self.agents: dict[str, AgentState] = {}  # UUID -> what the polls found
        self._hanging: set[str] = set()  # UUIDs whose poll is still inside libvirt
        self._hanging_lock = threading.Lock()
        self._read_for: float | None = None  # the connection whose XML was read
        self._seen_while_reading: dict[str, str | None] | None = None
        self.poll_duration = 0.0
        self.rounds = 0

    def _apply(self, collect: CollectConfig) -> None:
        self.interval = collect.guest_agent_interval
        self.timeout = collect.guest_agent_timeout

    async def reconfigure(self, collect: CollectConfig) -> Restart:
        """Take a reloaded interval and deadline from the next round on."""
        self._apply(collect)
        return ()

    def status(self) -> dict[str, Any]:
        """The poller's part of the daemon's status (``GET /v1/status``, key ``guest_agent``)."""
        return {"enabled": True, "interval": self.interval, "rounds": self.rounds,
                "connected_agents": len(self.connected),
                "up": sum(agent.up for agent in self.agents.values())}

    # -- which domains have an agent --------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Bus listener (loop thread): agents that connect and disconnect, domains that stop."""
        if event.uuid is None or event.domain is None:
            return
        if event.kind == "agent_lifecycle":
            self._note(event.uuid, event.domain if event.name == "connected" else None)
        elif event.kind == "lifecycle" and event.name in GONE:
            self._note(event.uuid, None)
            self.agents.pop(event.uuid, None)

    def _note(self, uuid: str, name: str | None) -> None:
        """The agent of ``uuid`` is connected (``name`` given) or not."""
        if self._seen_while_reading is not None:
            self._seen_while_reading[uuid] = name
        if name is not None:
            self.connected[uuid] = name
            return
        self.connected.pop(uuid, None)
        agent = self.agents.get(uuid)
        if agent is not None:
            agent.up, agent.reading = False, None

    async def _read_channels(self) -> None:
        """Which agents are connected, from the live XML (at start and after a reconnect).
        Events that arrive meanwhile are newer than the read: they win."""
        since = self.supervisor.connected_since
        self._seen_while_reading = {}
        try:
            found = await self.caller.call_with_deadline(
                max(self.timeout, self.supervisor.settings.open_timeout),
                self.pool.run, connected_agents)
            for uuid, name in self._seen_while_reading.items():
                if name is None:
                    found.pop(uuid, None)
                else:
                    found[uuid] = name
        finally:
            self._seen_while_reading = None
        self.connected = found
        for uuid in set(self.agents) - set(found):
            del self.agents[uuid]
        self._read_for = since

    # -- polling ------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll on a fixed tick while connected; ``started`` at once (never holds start-up)."""
        task_status.started()
        await run_rounds(self.supervisor, lambda: self.interval, self._round)

    async def _round(self) -> None:
        """One round; a failure is logged, and the next round comes on its tick."""
        try:
            await self.poll_round()
        except Exception as exc:
            log.warning("virtmon.guest_agent.round_failed", error=str(exc))

    async def poll_round(self) -> None:
        """Read the channels if the connection is new, then poll every connected agent."""
        started = time.monotonic()
        if self.supervisor.connected_since != self._read_for:
            await self._read_channels()
        slots = anyio.Semaphore(self.concurrency)
        async with anyio.create_task_group() as group:
            for uuid, name in list(self.connected.items()):
                group.start_soon(self._poll_one, uuid, name, slots)
        self.rounds += 1
        self.poll_duration = time.monotonic() - started

    async def _poll_one(self, uuid: str, name: str, slots: anyio.Semaphore) -> None:
        """One domain's poll, its outcome counted; the deadline starts with its turn."""
        agent = self.agents.setdefault(uuid, AgentState(name))
        agent.domain = name
        with self._hanging_lock:
            hanging = uuid in self._hanging
        if hanging:
            agent.probes["skipped"] += 1
            agent.up, agent.reading = False, None
            return
        async with slots:
            try:
                reading = await self.caller.call_with_deadline(
                    self.timeout, self.pool.run, self._tracked, uuid)
            except Exception as exc:
                outcome = "timeout" if isinstance(exc, CallTimeout) else "error"
                reading = None
                if agent.up:
                    log.info("virtmon.guest_agent.down", domain=name, error=str(exc))
            else:
                outcome = "ok"
        if uuid not in self.connected:  # disconnected or stopped while asked: keep that
            return
        agent.probes[outcome] += 1
        agent.up, agent.reading = reading is not None, reading
        if reading is not None:
            agent.last_success = self.clock()

    def _tracked(self, conn: Any, uuid: str) -> GuestReading:
        """:func:`read_guest`, with the domain marked as hanging while the call is inside."""
        with self._hanging_lock:
            self._hanging.add(uuid)
        try:
            return read_guest(conn, uuid, self.clock)
        finally:
            with self._hanging_lock:
                self._hanging.discard(uuid)

    def families(self) -> list[MetricFamily]:
        """The last results, for the cycle's exposition (loop thread, no I/O)."""
        return guest_agent_families(self.agents.values(), self.caller.abandoned_total,
                                    self.caller.abandoned_outstanding, self.poll_duration)

    def close(self) -> None:
        """Close the idle connections (blocking)."""
        self.pool.reset()
