"""The streamed operations: a domain's console and its channels, bridged over a WebSocket.

They are rows like every other operation (a name, a role, the C functions, the arguments), so
the coverage table, the audit records and the OpenAPI document treat them alike, but they are
served by their own routes (``GET /v1/domains/{domain}/console`` and
``/v1/domains/{domain}/channels/{name}``, virtmon/control/console.py), not ``/v1/ops``: what they
return is a byte stream for as long as the client keeps it open, not a JSON result.
"""

from __future__ import annotations

from typing import Any

from virtmon.control.operations.model import Operation, arg, need, op

CONSOLE_ROUTE = "/v1/domains/{domain}/console"
CHANNEL_ROUTE = "/v1/domains/{domain}/channels/{name}"


def _streamed(_dom: Any, _args: dict[str, Any]) -> None:
    raise AssertionError("a streamed operation is served by its route, never by /v1/ops")


FORCE = arg("force", "boolean", False,
            help="take the stream over from the client that has it (libvirt's FORCE flag)")

CONSOLE = op("domain.console", "domain", "write",
             "the domain's console (its first serial or console device) as a byte stream",
             "virDomainOpenConsole", _streamed, FORCE)
CHANNEL = op("domain.channel", "domain", "write",
             "one of the domain's channels (a virtio port, by its target name) as a byte stream",
             "virDomainOpenChannel", _streamed,
             need("name", "string", help="the channel's target name (org.qemu.guest_agent.0...)"),
             FORCE)

# name -> (row, route)
STREAMED: dict[str, tuple[Operation, str]] = {
    CONSOLE.name: (CONSOLE, CONSOLE_ROUTE),
    CHANNEL.name: (CHANNEL, CHANNEL_ROUTE),
}
