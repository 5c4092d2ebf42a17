"""AdminHelper: requests over the supervised child, restarts, events and failure handling."""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import anyio
import pytest

from tests.admin.conftest import BAD_SOCKET_URI, virt_admin
from tests.lab.close_watcher import close_watcher
from tests.waiting import wait_until
from virtmon.admin.client import (
    AdminError,
    AdminEvent,
    AdminHelper,
    AdminHelperUnavailable,
    AdminTimeout,
)

FAKE_HELPER = str(Path(__file__).with_name("fake_helper.py"))


async def next_event(events: anyio.abc.ObjectReceiveStream[AdminEvent], kind: str) -> AdminEvent:
    """The next event of `kind`, within 10 s."""
    with anyio.fail_after(10):
        async for event in events:
            if event.kind == kind:
                return event
    raise AssertionError("event stream ended")


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
async def test_snapshot_round_trip() -> None:
    """One snapshot request returns thread pool, limits and clients of both servers."""
    async with AdminHelper() as helper:
        pid = helper.pid
        snapshot = await helper.request("snapshot", timeout=10)
    assert {"libvirtd", "admin"} <= set(snapshot["servers"])
    server = snapshot["servers"]["admin"]
    assert {"minWorkers", "maxWorkers", "nWorkers", "freeWorkers", "prioWorkers",
            "jobQueueDepth"} <= set(server["threadpool"])
    assert {"nclients", "nclients_max", "nclients_unauth", "nclients_unauth_max"} <= set(
        server["client_limits"])
    me = [c for c in server["clients"] if c["info"].get("unix_process_id") == pid]
    assert me and me[0]["transport"] == "unix" and me[0]["info"]["readonly"] is False


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
async def test_kill_9_restarts_the_helper() -> None:
    """After kill -9 the helper is restarted, requests work again and nothing raises."""
    async with AdminHelper(backoff_initial=0.05) as helper:
        with helper.subscribe() as events:
            first = helper.pid
            assert first is not None and await helper.request("server_list")
            os.kill(first, signal.SIGKILL)
            died = await next_event(events, "helper_died")
            started = await next_event(events, "helper_started")
        assert died.detail["returncode"] == -signal.SIGKILL
        assert started.detail["restarts"] == 1 and helper.pid not in (None, first)
        assert "libvirtd" in await helper.request("server_list")


@pytest.mark.lab
async def test_unreachable_admin_socket_raises_admin_error() -> None:
    """A bad socket path raises AdminError with libvirt's code; the helper stays up."""
    async with AdminHelper(BAD_SOCKET_URI) as helper:
        pid = helper.pid
        for _ in range(2):
            with pytest.raises(AdminError) as caught:
                await helper.request("snapshot")
            assert caught.value.code == 38 and "Failed to connect socket" in caught.value.message
        assert helper.pid == pid


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
async def test_non_root_helper_gets_permission_error() -> None:
    """A helper without access to the root-only admin socket reports a clear AdminError."""
    command = ["setpriv", "--reuid=virtmon-lab", "--regid=virtmon-lab", "--clear-groups",
               sys.executable, "-m", "virtmon.admin.helper"]
    async with AdminHelper(command=command) as helper:
        with pytest.raises(AdminError) as caught:
            await helper.request("server_list")
    assert caught.value.code == 38 and "Permission denied" in caught.value.message


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
async def test_admin_connection_loss_and_return_are_events() -> None:
    """Lookup/info find the helper's own client; kicking it gives connection lost, then restored."""
    async with AdminHelper() as helper:
        with helper.subscribe() as events:
            clients = await helper.request("client_list", {"server": "admin", "info": True})
            own = [c["id"] for c in clients if c["info"]["unix_process_id"] == helper.pid]
            assert len(own) == 1
            found = await helper.request("client_lookup", {"server": "admin", "id": own[0]})
            assert found["id"] == own[0] and found["transport"] == "unix"
            info = await helper.request("client_info", {"server": "admin", "id": own[0]})
            assert info["unix_process_id"] == helper.pid and info["readonly"] is False
            with pytest.raises(AdminError):  # the reply is lost with the connection
                await helper.request("client_close", {"server": "admin", "id": own[0]})
            lost = await next_event(events, "admin_connection_lost")
            assert lost.detail["reason"] in {"eof", "error"}
            assert "admin" in await helper.request("server_list")
            await next_event(events, "admin_connection_restored")


async def test_helper_that_cannot_start_never_raises() -> None:
    """A helper that exits at once makes requests fail fast; the supervisor keeps retrying."""
    command = [sys.executable, "-c", "import sys; sys.exit(3)"]
    async with AdminHelper(command=command, backoff_initial=0.05) as helper:
        # Unavailable at once, not a timeout of the request (5 s by default).
        with anyio.fail_after(4), pytest.raises(AdminHelperUnavailable):
            await helper.request("server_list")
        await wait_until(lambda: helper.restarts >= 2, timeout=30)


def lines_in(path: Path) -> int:
    """How many requests a fake helper logged."""
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_stuck_helper_is_killed_and_in_flight_is_bounded(tmp_path: Path) -> None:
    """At most max_in_flight requests reach the helper; a timeout on the oldest restarts it. The
    control: with room for three, the third reaches the helper within the same wait."""
    window = 0.3  # a third request, had one been let through, would be logged within it
    control_log = tmp_path / "control-requests"
    control_command = [sys.executable, FAKE_HELPER, str(control_log)]
    async with AdminHelper(command=control_command, max_in_flight=3) as wider, \
            anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(functools.partial(wider.request, "server_list", timeout=5.0))
        await wait_until(lambda: lines_in(control_log) >= 2, timeout=4)
        await wait_until(lambda: lines_in(control_log) == 3, timeout=window)
        tg.cancel_scope.cancel()
    log = tmp_path / "requests"
    command = [sys.executable, FAKE_HELPER, str(log)]
    async with AdminHelper(command=command, max_in_flight=2, backoff_initial=0.05) as helper:
        events = helper.subscribe()
        outcomes: list[AdminError] = []

        async def one() -> None:
            try:
                await helper.request("server_list", timeout=5.0)
            except AdminError as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)

            await wait_until(lambda: lines_in(log) >= 2, timeout=4)
            await anyio.sleep(window)
            assert lines_in(log) == 2
        assert len(outcomes) == 5
        assert any(isinstance(exc, AdminTimeout) for exc in outcomes)
        with events:
            started = await next_event(events, "helper_started")
        assert started.detail["restarts"] >= 1


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
async def test_loop_is_not_blocked_during_requests() -> None:
    """A request to a helper that does not answer (SIGSTOPped) leaves the loop running: a
    ticker goes on ticking while it waits, and it completes once the helper goes on."""
    async with AdminHelper() as helper:
        await helper.request("server_list", timeout=10)
        assert helper.pid is not None
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await anyio.sleep(0.01)
                ticks += 1

        reply: list[object] = []

        async def snapshot() -> None:
            reply.append(await helper.request("snapshot", timeout=30))

        os.kill(helper.pid, signal.SIGSTOP)
        # Were the loop blocked in the request, nothing on it could continue the helper: a
        # thread does so after 25 s, and the check below then fails instead of hanging.
        rescue = threading.Timer(25, os.kill, (helper.pid, signal.SIGCONT))
        rescue.start()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                tg.start_soon(snapshot)
                await wait_until(lambda: ticks >= 20, timeout=20)
                assert not reply  # the loop ran on while the request waited for its answer
                os.kill(helper.pid, signal.SIGCONT)
                await wait_until(lambda: bool(reply), timeout=20)
                tg.cancel_scope.cancel()
        finally:
            rescue.cancel()
            os.kill(helper.pid, signal.SIGCONT)
    assert isinstance(reply[0], dict) and "servers" in reply[0]


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
async def test_client_disconnect_closes_a_libvirt_connection() -> None:
    """A client closed through the helper sees its close callback fire and leaves the list."""
    async with close_watcher("qemu:///system") as watcher:
        proc = watcher.process
        async with AdminHelper() as helper:
            clients = await helper.request("client_list", {"server": "libvirtd", "info": True})
            mine = [c for c in clients if c["info"].get("unix_process_id") == proc.pid]
            assert len(mine) == 1 and mine[0]["info"]["readonly"] is True
            assert str(mine[0]["id"]) in virt_admin("srv-clients-list", "libvirtd")
            await helper.request("client_close", {"server": "libvirtd", "id": mine[0]["id"]})
            assert (await watcher.closed()).startswith(b"closed")
            after = await helper.request("client_list", {"server": "libvirtd"})
            assert mine[0]["id"] not in [c["id"] for c in after]
            assert f" {mine[0]['id']} " not in virt_admin("srv-clients-list", "libvirtd")


ORPHAN_CONNECTOR = """
import socket, sys
channel = socket.socket(fileno=int(sys.argv[1]))
libvirtd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
libvirtd.connect("/run/libvirt/libvirt-sock-ro")
socket.send_fds(channel, [b"x"], [libvirtd.fileno()])
"""


@pytest.mark.lab
@pytest.mark.usefixtures("lab")
async def test_a_client_whose_process_is_gone_does_not_fail_the_snapshot() -> None:
    """A libvirtd client connected by a process that exited (its fd lives on elsewhere) has no
    identity, so libvirt refuses its info: the snapshot still lists it, without details."""
    ours, theirs = socket.socketpair()
    child = await anyio.run_process(
        [sys.executable, "-c", ORPHAN_CONNECTOR, str(theirs.fileno())],
        pass_fds=[theirs.fileno()], check=True)
    assert child.returncode == 0  # the process that connected to libvirtd is gone
    _, [orphan], _, _ = socket.recv_fds(ours, 16, 1)
    try:
        async with AdminHelper() as helper:
            snapshot = await helper.request("snapshot", timeout=10)
        clients = snapshot["servers"]["libvirtd"]["clients"]
        orphaned = [c for c in clients if c["info"] == {}]  # listed, without their details
        assert orphaned and all(c["transport"] == "unix" and "identity" in c["info_error"]
                                for c in orphaned)
    finally:
        os.close(orphan)
        ours.close()
        theirs.close()
