"""A hostile read-role caller of the control socket: takes every resource it can, and holds it.

Run by tests/control/test_hostile_caller.py under ``setpriv`` with a throwaway read uid:
``python -m tests.control.hostile_probe SOCKET STREAMS BODIES IDLE``. It opens STREAMS event
streams it never reads (slow readers), one oversized body (1 GiB announced, a little over 1 MiB
sent), BODIES requests whose body it sends one byte of and never finishes (slow bodies), and
IDLE connections that send nothing; prints ``{"streams": {status: count}, "oversized": status,
"bodies": {...}}`` (a request still waiting for its answer counts as ``"pending"``) as one line,
then holds every connection until its standard input closes. Standard library only.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from collections import Counter

STREAM = (b"GET /v1/events?follow=1 HTTP/1.1\r\nHost: virtmon\r\n"
          b"Accept: text/event-stream\r\n\r\n")
SLOW_BODY = (b"POST /v1/ops/host.info HTTP/1.1\r\nHost: virtmon\r\n"
             b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
# Says 1 GiB, sends a little more than control.max_body's default (1 MiB).
OVERSIZED = (b"POST /v1/ops/host.info HTTP/1.1\r\nHost: virtmon\r\n"
             b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
             + b" " * ((1 << 20) + 4096))


def connect(path: str) -> socket.socket:
    """A connection to the control socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def statuses(socks: list[socket.socket], wait: float) -> Counter[str]:
    """The status of each connection's answer, as far as one came within ``wait`` seconds."""
    got: dict[socket.socket, bytes] = {s: b"" for s in socks}
    pending = set(socks)
    deadline = time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        readable, _, _ = select.select(list(pending), [], [], 0.1)
        for sock in readable:
            chunk = sock.recv(64)
            got[sock] += chunk
            if b"\r\n" in got[sock] or not chunk:
                pending.discard(sock)
    return Counter(data.split(b" ")[1].decode() if data.startswith(b"HTTP/1.1 ") else "pending"
                   for data in got.values())


def main() -> None:
    """Open everything, report, hold until stdin closes."""
    path, streams, bodies, idle = sys.argv[1], *map(int, sys.argv[2:5])
    held: list[socket.socket] = []
    stream_socks = [connect(path) for _ in range(streams)]
    for sock in stream_socks:
        sock.sendall(STREAM)
    oversized = connect(path)
    oversized.sendall(OVERSIZED)
    oversized_status = next(iter(statuses([oversized], 10.0)))
    body_socks = [connect(path) for _ in range(bodies)]
    for sock in body_socks:
        sock.sendall(SLOW_BODY)
    held += [*stream_socks, oversized, *body_socks]
    held += [connect(path) for _ in range(idle)]
    report = {
        "streams": statuses(stream_socks, 10.0),
        "oversized": oversized_status,
        "bodies": statuses(body_socks, 2.0),
    }
    print(json.dumps(report), flush=True)
    sys.stdin.read()
    for sock in held:
        sock.close()


if __name__ == "__main__":
    main()
