"""A small WebSocket client (RFC 6455) over the control socket, with the standard library only.

Enough for a console: the opening handshake (an error answer becomes the daemon's
:class:`~virtmon.ctl.client.Problem`), binary frames both ways (the client's masked, as the RFC
requires), pings answered, fragments joined, and the close handshake with its code and reason.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
from dataclasses import dataclass

from virtmon.ctl.client import HOST, Problem, connect_unix, problem_of

# The RFC's GUID: the server proves it read our key by hashing it with this.
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HEADER = 64 * 1024
# The largest message accepted from the daemon (it sends at most its buffer, 1 MiB).
MAX_MESSAGE = 16 << 20


class ProtocolError(Exception):
    """The daemon's answer is not the WebSocket it should be."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The daemon closed the stream: its code and reason."""

    code: int
    reason: str


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + ACCEPT_GUID).digest()).decode()


def frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame; masked when ``mask`` (4 bytes) is given (every client frame is)."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, length | (0x80 if mask else 0))
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126 | (0x80 if mask else 0), length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127 | (0x80 if mask else 0), length)
    if mask is None:
        return head + payload
    return head + mask + _masked(payload, mask)


def _masked(payload: bytes, mask: bytes) -> bytes:
    # XOR with the key repeated: as one big integer, fast enough for a console's messages.
    repeated = (mask * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big")


class WebSocket:
    """A connected WebSocket on a Unix socket (blocking; ``sock`` may be polled for reading)."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"") -> None:
        self.sock = sock
        self._buffer = bytearray(buffered)
        self._fragments: list[bytes] = []
        self.closed: Closed | None = None

    @classmethod
    def connect(cls, path: str, target: str, timeout: float) -> WebSocket:
        """Open ``target`` on the socket at ``path`` and upgrade; OSError when the socket cannot
        be reached, :class:`Problem` for an error answer."""
        sock = connect_unix(path, timeout)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall((f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            head, rest = _read_head(sock)
            status, headers = _parse_head(head)
            if status != 101:
                raise _problem(sock, status, headers, rest)
            if headers.get("sec-websocket-accept") != accept_key(key):
                raise ProtocolError("the daemon's answer to the WebSocket key is wrong")
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest)

    def fileno(self) -> int:
        """For select/poll."""
        return self.sock.fileno()

    def pending(self) -> bool:
        """Whether bytes already read may hold a frame (poll would not say so)."""
        return bool(self._buffer)

    def send(self, data: bytes) -> None:
        """One binary message."""
        self.sock.sendall(frame(BINARY, data, os.urandom(4)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start (or answer) the close handshake; errors of a gone peer are ignored."""
        with contextlib.suppress(OSError):
            self.sock.sendall(frame(CLOSE, struct.pack("!H", code) + reason.encode()[:123],
                                    os.urandom(4)))

    def receive(self) -> bytes | Closed:
        """The next data message (blocking), or :class:`Closed` once the daemon closes."""
        while True:
            fin, opcode, payload = self._frame()
            if opcode == PING:
                self.sock.sendall(frame(PONG, payload, os.urandom(4)))
            elif opcode == PONG:
                continue
            elif opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.closed = Closed(code, payload[2:].decode(errors="replace"))
                self.close(code if code != 1005 else 1000)
                return self.closed
            else:
                self._fragments.append(payload)
                if sum(len(f) for f in self._fragments) > MAX_MESSAGE:
                    raise ProtocolError("a message longer than the daemon ever sends")
                if fin:
                    message = b"".join(self._fragments)
                    self._fragments.clear()
                    return message

    def _frame(self) -> tuple[bool, int, bytes]:
        head = self._take(2)
        fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
        if head[1] & 0x80:
            raise ProtocolError("the daemon sent a masked frame")
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._take(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._take(8))[0]
        if length > MAX_MESSAGE:
            raise ProtocolError(f"a frame of {length} bytes")
        return fin, opcode, self._take(length)

    def _take(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self._buffer)))
            if not chunk:
                raise ConnectionResetError("the daemon closed the connection")
            self._buffer += chunk
        taken = bytes(self._buffer[:count])
        del self._buffer[:count]
        return taken


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("the daemon closed the connection")
        data += chunk
        if len(data) > MAX_HEADER:
            raise ProtocolError("the daemon's answer has no end of its header")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _problem(sock: socket.socket, status: int, headers: dict[str, str], body: bytes) -> Problem:
    """The problem document of an error answer (read to its Content-Length)."""
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < min(length, MAX_HEADER):
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return problem_of(status, "", body)
