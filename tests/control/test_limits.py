"""Request limits of the control socket, on libvirt's test driver."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import daemon_config, running_daemon
from tests.streamclient import follow
from virtmon.control import api
from virtmon.ctl.client import ControlClient, Problem

SLOW_BODY = (b"POST /v1/ops/host.info HTTP/1.1\r\nHost: virtmon\r\n"
             b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")


@contextlib.contextmanager
def slow_bodies(sock: Path, count: int) -> Iterator[list[socket.socket]]:
    """``count`` requests whose body has begun and does not go on: each holds a request slot."""
    conns = []
    try:
        for _ in range(count):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conns.append(conn)
            conn.connect(str(sock))
            conn.sendall(SLOW_BODY)
        yield conns
    finally:
        for conn in conns:
            conn.close()


async def refused(client: ControlClient) -> Problem:
    """The problem GET /v1/status is answered with, once the slots the test holds are taken."""
    for _ in range(200):
        try:
            await asyncio.to_thread(client.get, "/v1/status")
        except Problem as exc:
            return exc
        await asyncio.sleep(0.02)
    pytest.fail("never refused while the slots were held")


async def test_open_followers_take_no_request_slot(short_tmp: Path) -> None:
    """Event streams are not requests: with max_requests=1 and followers open, status, reads
    and further streams are still answered (every request was 503 before)."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        control={"max_requests": 1})
    async with running_daemon(cfg) as daemon:
        client = ControlClient(str(daemon.control_socket), timeout=10)
        async with follow(daemon.control_socket), follow(daemon.control_socket), \
                follow(daemon.control_socket):
            assert daemon.stream_slots.open == 3
            status = await asyncio.to_thread(client.get, "/v1/status")
            assert status["control"]["streams"] == 3
            assert (await asyncio.to_thread(client.call, "host.info"))["cpus"] > 0


async def test_requests_beyond_max_requests_get_503(short_tmp: Path) -> None:
    """With max_requests=2 held by requests whose bodies are still coming, the next is 503."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        control={"max_requests": 2})
    async with running_daemon(cfg) as daemon:
        client = ControlClient(str(daemon.control_socket), timeout=10)
        with slow_bodies(daemon.control_socket, 2):
            exc = await refused(client)
        assert exc.status == 503 and "retry" in exc.detail
        assert await asyncio.to_thread(client.get, "/v1/status")  # free again


async def test_one_caller_gets_429_beyond_its_share(short_tmp: Path) -> None:
    """max_requests_per_caller: a caller holding its share gets 429 (with Retry-After) for the
    next request, while the daemon has slots left for the others (test_hostile_caller.py)."""
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"},
                        control={"max_requests": 10, "max_requests_per_caller": 2})
    async with running_daemon(cfg) as daemon:
        client = ControlClient(str(daemon.control_socket), timeout=10)
        with slow_bodies(daemon.control_socket, 2):
            exc = await refused(client)
        assert exc.status == 429 and "max_requests_per_caller" in exc.detail


async def test_a_body_that_does_not_arrive_is_a_408(short_tmp: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A request body still incomplete after the body timeout is answered 408, and its slot is
    free again: trickling bodies cannot hold slots for ever."""
    monkeypatch.setattr(api, "BODY_TIMEOUT", 0.3)
    cfg = daemon_config(short_tmp, libvirt={"uri": "test:///default"})
    async with running_daemon(cfg) as daemon:
        with slow_bodies(daemon.control_socket, 1) as (conn,):
            conn.settimeout(10)
            answer = await asyncio.to_thread(conn.recv, 4096)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"did not arrive within 0.3 s" in answer


def test_the_daemon_raises_its_open_file_limit() -> None:
    """At systemd's default soft limit (1,024 descriptors) a caller holding connections could
    leave the daemon unable to accept anyone else: the daemon takes the hard limit."""
    code = ("import resource\n"
            "from virtmon.app import raise_fd_limit\n"
            "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
            "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    raised, soft, hard = (int(x) for x in done.stdout.split())
    assert raised == soft > 256
    assert soft == hard or hard == resource.RLIM_INFINITY
