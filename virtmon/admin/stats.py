"""The admin helper's ``snapshot`` reply as typed statistics: per daemon server, its thread pool,
its client limits and its clients counted by transport and by access.

The daemon asks for a snapshot every ``collect.admin_interval`` seconds and hands an
:class:`AdminStats` to the admin collector (virtmon.collectors.admin), which turns it into metric
families.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AdminStats", "ServerStats"]


@dataclass(frozen=True, slots=True)
class ServerStats:
    """One daemon server (``libvirtd``, ``admin``, ...) as the admin API reported it.

    `threadpool` and `client_limits` are the typed parameters by their libvirt names
    (``minWorkers``, ``nclients_max``, ...). Clients whose info lacked the ``readonly`` flag
    count in neither `readonly_clients` nor `readwrite_clients`.
    """

    name: str
    threadpool: Mapping[str, int] = field(default_factory=dict)
    client_limits: Mapping[str, int] = field(default_factory=dict)
    clients_by_transport: Mapping[str, int] = field(default_factory=dict)
    readonly_clients: int = 0
    readwrite_clients: int = 0


@dataclass(frozen=True, slots=True)
class AdminStats:
    """Everything the admin collector needs, for every server of the daemon, and when the
    helper answered (Unix time; the cycles between two reads carry the last answer)."""

    servers: tuple[ServerStats, ...]
    read_at: float = 0.0

    @classmethod
    def from_helper(cls, result: Mapping[str, Any], read_at: float = 0.0) -> AdminStats:
        """Build from the admin helper's ``snapshot`` reply (``{"servers": {name: {...}}}``)
        that arrived at ``read_at``."""
        servers = []
        for name, server in sorted(result.get("servers", {}).items()):
            transports: Counter[str] = Counter()
            readonly = readwrite = 0
            for client in server.get("clients", ()):
                transports[str(client.get("transport"))] += 1
                flag = client.get("info", {}).get("readonly")
                if flag is True:
                    readonly += 1
                elif flag is False:
                    readwrite += 1
            servers.append(
                ServerStats(
                    name=name,
                    threadpool=_numbers(server.get("threadpool", {})),
                    client_limits=_numbers(server.get("client_limits", {})),
                    clients_by_transport=dict(transports),
                    readonly_clients=readonly,
                    readwrite_clients=readwrite,
                )
            )
        return cls(tuple(servers), read_at)


def _numbers(params: Mapping[str, Any]) -> dict[str, int]:
    return {
        key: value for key, value in params.items()
        if isinstance(value, int) and not isinstance(value, bool)
    }
