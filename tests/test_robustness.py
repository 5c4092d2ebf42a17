"""Failures that must stay local: a bad collector, a failing journal, a second instance."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import daemon_config, running_daemon
from tests.daemon import free_port
from tests.waiting import wait_until
from virtmon.collectors.base import run_collectors
from virtmon.collectors.snapshot import StatsSnapshot
from virtmon.events.bus import INGEST_SINK, EventBus
from virtmon.events.journal import Journal
from virtmon.events.model import Event
from virtmon.exposition.family import MetricFamily


class WrongArity:
    """A collector whose sample has fewer label values than label names."""

    name = "broken"

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        family = MetricFamily("x_bytes", "gauge", "x", ("domain", "device"))
        family.add(("only-one",), 1)
        return [family]


class Fine:
    """A collector that works."""

    name = "fine"

    def collect(self, snapshot: StatsSnapshot) -> list[MetricFamily]:
        family = MetricFamily("y_bytes", "gauge", "y")
        family.add((), 2)
        return [family]


def test_a_sample_with_the_wrong_number_of_labels_fails_only_its_collector() -> None:
    """The adapter rejects a malformed family as that collector's failure; others still export."""
    snapshot = StatsSnapshot(taken_at=0, requested_groups=frozenset(), domains=())
    families, outcomes = run_collectors([WrongArity(), Fine()], snapshot)
    assert {o.name: o.success for o in outcomes} == {"broken": False, "fine": True}
    assert "x_bytes" not in {f.name for f in families}
    assert "y_bytes" in {f.name for f in families}


class FailingJournal(Journal):
    """A journal whose writes fail (a full disk)."""

    def append(self, events: Any) -> list[Event]:
        raise OSError(28, "No space left on device")


async def test_a_failing_journal_drops_and_counts_without_stopping_the_bus(
    tmp_path: Path,
) -> None:
    """A batch that cannot be journaled is counted as dropped; the bus task keeps running."""
    journal = FailingJournal(tmp_path / "j.db")
    bus = EventBus(journal)
    sub = bus.subscribe("sink", 10)
    async with anyio.create_task_group() as group:
        group.start_soon(bus.run)
        bus.publish(Event(time=1.0, uri="test:///", kind="reboot", name="reboot"))
        await wait_until(lambda: bus.dropped[INGEST_SINK] > 0, timeout=10)
        assert bus.dropped[INGEST_SINK] == 1
        with pytest.raises(anyio.WouldBlock):
            sub._receive.receive_nowait()  # nothing unjournaled reaches a subscriber
        bus.close()
    bus.unsubscribe(sub)
    journal.close()


async def test_a_second_instance_on_the_same_socket_refuses_to_start(short_tmp: Path) -> None:
    """Starting on a control socket another daemon serves fails with one line, exit 69."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        collect={"collectors": {"admin": False}})
    async with running_daemon(cfg) as daemon:
        # A free port of its own: only the control socket is in use, so only it can refuse.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "virtmon.cli", "run", "--uri", "test:///default",
            "--listen", f"127.0.0.1:{free_port()}", "--control-socket", str(daemon.control_socket),
            "--state-dir", str(short_tmp / "other"), "--no-collector.admin",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 69
        assert f"another virtmon answers on {daemon.control_socket}" in err.decode()
        assert daemon.control_socket.exists()  # the first daemon's socket is left alone
