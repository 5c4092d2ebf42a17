"""Socket activation of the control socket, with systemd's own `systemd-socket-activate`."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

from tests.daemon import free_port
from tests.systemd.notifyhelpers import NotifySocket, daemon_process, write_config
from tests.tools import need
from virtmon.systemd import ActivatedSocket, pick_socket


def http_get_unix(path: Path, target: str, timeout: float) -> tuple[int, bytes]:
    """A blocking HTTP/1.0 GET over a Unix socket (the first connection triggers activation)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: virtmon\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_daemon_serves_the_control_api_on_a_socket_passed_by_systemd(short_tmp: Path) -> None:
    """LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES=control: the first request starts the daemon, which
    answers on the passed socket, binds none of its own, and leaves systemd's file in place."""
    activate = need("systemd-socket-activate")
    activated = short_tmp / "activated.sock"
    cfg = short_tmp / "virtmon.toml"
    write_config(cfg, short_tmp, free_port())
    notify = NotifySocket(short_tmp)
    prefix = [activate, "-l", str(activated), "--fdname=control", "-E", "NOTIFY_SOCKET"]
    try:
        with daemon_process(short_tmp, cfg, notify, watchdog_usec=None,
                            argv_prefix=prefix) as daemon:
            deadline = time.monotonic() + 10
            while not activated.exists():
                assert daemon.proc.poll() is None, daemon.log_path.read_text()
                assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
                time.sleep(0.05)
            assert notify.received == []  # nothing runs before the first connection
            status, body = http_get_unix(activated, "/v1/status", timeout=30)
            assert status == 200, body
            assert json.loads(body)["libvirt"]["uri"] == "test:///default"
            notify.wait_for(lambda m: m.get("READY") == "1")
            assert not (short_tmp / "control.sock").exists()  # the configured path: unused
            records = [r for r in daemon.log()
                       if r.get("event") == "virtmon.control.socket_activated"]
            assert records and records[0]["path"] == str(activated)
            daemon.signal(signal.SIGTERM)
            assert daemon.proc.wait(timeout=30) == 0
            assert activated.exists()  # systemd's socket file is not the daemon's to remove
    finally:
        notify.close()


def test_pick_socket_prefers_the_name_then_an_unnamed_socket_of_the_right_family() -> None:
    """FileDescriptorName=control wins, else an unnamed AF_UNIX socket, never another role's."""
    unix_a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sockets = [ActivatedSocket("metrics", tcp), ActivatedSocket("virtmon.socket", unix_a),
                   ActivatedSocket("control", unix_b)]
        assert pick_socket(sockets, "control", (socket.AF_UNIX,)) is unix_b
        assert pick_socket(sockets[:2], "control", (socket.AF_UNIX,)) is unix_a
        assert pick_socket(sockets, "metrics", (socket.AF_INET,)) is tcp
        assert pick_socket([ActivatedSocket("metrics", tcp)], "control", (socket.AF_INET,)) is None
    finally:
        for sock in (unix_a, unix_b, tcp):
            sock.close()
