"""What the admin helper and the daemon say to each other: one JSON object per line.

- request ``{"id": 1, "op": "threadpool_get", "args": {"server": "libvirtd"}}``
- reply ``{"id": 1, "ok": true, "result": ...}`` or
  ``{"id": 1, "ok": false, "error": {"code": 95, "domain": 62, "message": "..."}}``;
  ``code`` and ``domain`` are libvirt's virErrorNumber/virErrorDomain (domain 0 for errors the
  helper itself raises about a malformed request)
- unsolicited ``{"event": KIND, ...}``, ``KIND`` one of :data:`HELPER_READY` (first line, with
  ``pid``, ``version`` and ``uri``), :data:`HELPER_FAILED` (first and last line, with
  ``message``), :data:`CONNECTION_LOST` (with ``reason``: one of :data:`CLOSE_REASONS`) and
  :data:`CONNECTION_RESTORED`

Requests are served one at a time in arrival order; end of input ends the helper.
"""

from __future__ import annotations

import json
from typing import Any

# The admin URI of a monolithic libvirtd (virtqemud:///system on modular daemons).
DEFAULT_URI = "libvirtd:///system"
# The longest line either side reads (a snapshot with thousands of clients fits).
MAX_LINE = 64 * 1024 * 1024

HELPER_READY = "helper_ready"
HELPER_FAILED = "helper_failed"
CONNECTION_LOST = "admin_connection_lost"
CONNECTION_RESTORED = "admin_connection_restored"

# virErrorNumber / virErrorDomain values of errors raised by the helper itself.
ERR_INTERNAL_ERROR = 1
ERR_NO_SUPPORT = 3
ERR_INVALID_ARG = 8
FROM_NONE = 0

# virClientTransport by value, as replies name a client's transport.
TRANSPORTS: tuple[str, ...] = ("unix", "tcp", "tls")
# virAdmConnectCloseReason by value, as CONNECTION_LOST names its reason.
CLOSE_REASONS: tuple[str, ...] = ("error", "eof", "keepalive", "client")


def name_of(names: tuple[str, ...], value: int) -> str:
    """A libvirt enum value by its name (the number itself beyond the table)."""
    return names[value] if 0 <= value < len(names) else str(value)


class HelperError(Exception):
    """A failure to report in a reply: libvirt's error code, domain and message."""

    def __init__(self, code: int, domain: int, message: str) -> None:
        super().__init__(message)
        self.code, self.domain, self.message = code, domain, message

    def as_json(self) -> dict[str, Any]:
        """The reply's ``error`` object."""
        return {"code": self.code, "domain": self.domain, "message": self.message}


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"
