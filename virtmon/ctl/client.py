"""A blocking client of the control socket: HTTP/1.1 over AF_UNIX with the standard library only.

``virtmonctl`` uses it, so it must start fast: nothing here imports libvirt, aiohttp or anyio.
Failures come out as two exceptions a caller can map to exit codes: :class:`Unreachable` (the
socket is missing, refuses, denies access, or the daemon stopped answering) and :class:`Problem`
(the daemon answered with an ``application/problem+json`` error).
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
import stat
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote, urlencode

PROBLEM_TYPE = "application/problem+json"
# The Host header is required by HTTP/1.1 and meaningless on a Unix socket.
HOST = "virtmon"
# Operations that outlast a request: the daemon gives them a deadline of their own
# (control.migration_timeout, an hour by default) and answers 504 past it, so the client waits
# for that answer instead of giving up after its own timeout while the migration goes on.
OUTLAST_A_REQUEST = frozenset({"domain.migrate", "domain.migrate_to_uri"})


class Unreachable(Exception):
    """The daemon cannot be reached (or stopped answering) on the socket."""

    def __init__(self, path: str, reason: str, denied: bool = False) -> None:
        super().__init__(f"cannot reach virtmon at {path}: {reason}")
        self.path = path
        self.reason = reason
        self.denied = denied  # permission denied (EACCES/EPERM) rather than absent


class Problem(Exception):
    """An error answer from the daemon (RFC 9457 problem document, or a bare HTTP error)."""

    def __init__(self, status: int, title: str, detail: str = "",
                 document: dict[str, Any] | None = None) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status = status
        self.title = title
        self.detail = detail
        self.document = document or {}


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket: only :meth:`connect` differs."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__(HOST, timeout=timeout)
        self.path = path

    def connect(self) -> None:
        """Open the AF_UNIX socket instead of a TCP connection."""
        self.sock = connect_unix(self.path, self.timeout)


def connect_unix(path: str, timeout: float | None) -> socket.socket:
    """A stream socket connected to ``path`` (closed again if the connect fails)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def _unreachable(path: str, exc: OSError | http.client.HTTPException) -> Unreachable:
    """Turn a connect/read error into a message an operator can act on."""
    if isinstance(exc, http.client.HTTPException):
        return Unreachable(path, "the daemon closed the connection")
    if isinstance(exc, FileNotFoundError):
        return Unreachable(path, "no such socket (is the daemon running? "
                                 "--socket or VIRTMON_SOCKET selects another)")
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return Unreachable(path, "permission denied (members of the socket's group, "
                                 "virtmon by default, may use it)", denied=True)
    if isinstance(exc, ConnectionRefusedError):
        what = _not_a_socket(path)
        if what:
            return Unreachable(path, f"not a socket but {what} (--socket or VIRTMON_SOCKET "
                                     "names the daemon's control.socket)")
        return Unreachable(path, "connection refused (a stale socket: is the daemon running?)")
    if isinstance(exc, TimeoutError):
        return Unreachable(path, "no answer in time")
    if isinstance(exc, ConnectionError):
        return Unreachable(path, "the daemon closed the connection")
    return Unreachable(path, exc.strerror or str(exc))


def _not_a_socket(path: str) -> str:
    """What ``path`` is when it is not a socket (connect() refuses those too); '' if it is."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISSOCK(mode):
        return ""
    return "a directory" if stat.S_ISDIR(mode) else "a file"


def problem_of(status: int, reason: str, body: bytes) -> Problem:
    """The error an HTTP error answer carries: its problem document, else its first words."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("title"), str):
        return Problem(status, doc["title"], str(doc.get("detail") or ""), doc)
    text = body.decode(errors="replace").strip()
    return Problem(status, reason or f"HTTP {status}", text[:200])


class ControlClient:
    """Requests to one control socket; a new connection per request (they are cheap locally)."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    def _open(self, target: str, accept: str, timeout: float | None, method: str = "GET",
              body: bytes | None = None) -> tuple[UnixHTTPConnection, http.client.HTTPResponse]:
        conn = UnixHTTPConnection(self.path, timeout)
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            if response.status >= 400:
                raise problem_of(response.status, response.reason, response.read())
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _unreachable(self.path, exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn, response

    def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> Any:
        """GET a JSON document."""
        return self._json("GET", path + (f"?{urlencode(query)}" if query else ""), None,
                          self.timeout)

    def post(self, path: str, document: Any, *, wait: bool = False) -> Any:
        """POST a JSON document; the JSON answer (``wait``: however long the daemon takes)."""
        return self._json("POST", path, json.dumps(document).encode(),
                          None if wait else self.timeout)

    def _json(self, method: str, target: str, body: bytes | None,
              timeout: float | None) -> Any:
        conn, response = self._open(target, "application/json", timeout, method, body)
        try:
            return json.loads(response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(self.path, exc) from exc
        finally:
            conn.close()

    def call(self, operation: str, **arguments: Any) -> Any:
        """Run one operation (``domain.suspend``, ...); its ``result``."""
        answer = self.post("/v1/ops/" + quote(operation, safe="."), arguments,
                           wait=operation in OUTLAST_A_REQUEST)
        return answer.get("result") if isinstance(answer, dict) else answer

    def call_bytes(self, operation: str, **arguments: Any) -> bytes:
        """Run an operation whose result is bytes (screenshot, peeks); the bytes themselves."""
        body = json.dumps(arguments).encode()
        conn, response = self._open("/v1/ops/" + quote(operation, safe="."),
                                    "application/octet-stream", self.timeout, "POST", body)
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(self.path, exc) from exc
        finally:
            conn.close()
        if (response.getheader("Content-Type") or "").startswith("application/json"):
            raise ValueError(f"{operation} does not return bytes")
        return data

    def domain(self, key: str) -> Any:
        """One domain by name, UUID or id."""
        return self.get("/v1/domains/" + quote(key, safe=""))

    def stream(self, path: str, query: Sequence[tuple[str, str]] = (),
               deadline: float | None = None) -> Iterator[bytes]:
        """The lines of an NDJSON response as they arrive (chunk by chunk, never buffered whole).

        ``deadline`` (a ``time.monotonic()`` value) ends the iteration quietly when reached; without
        it a line may take as long as it takes (a follower waits for events indefinitely).
        """
        target = path + (f"?{urlencode(query)}" if query else "")
        first = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        conn, response = self._open(target, "application/x-ndjson",
                                    self.timeout if first is None else min(self.timeout, first))
        try:
            while True:
                if conn.sock is not None:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    conn.sock.settimeout(remaining)
                try:
                    line = response.readline()
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                    raise
                if not line:
                    return
                if line.strip():
                    yield line
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(self.path, exc) from exc
        finally:
            conn.close()
