"""Who is calling: the peer's credentials (SO_PEERCRED) and the role they map to.

Roles are ordered: ``admin`` can do what ``write`` can, which can do what ``read`` can. The map
comes from ``[control]``: ``admin_uids``/``admin_groups``, ``write_uids``/``write_groups``,
``read_uids``/``read_groups``; by default root is admin and group ``virtmon`` reads. A group
matches the peer's primary gid (from the socket) or any supplementary group of its user.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from virtmon.config import ControlConfig

ORDER = {"none": 0, "read": 1, "write": 2, "admin": 3}


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a Unix socket connection."""

    pid: int
    uid: int
    gid: int

    @property
    def comm(self) -> str:
        """The command name (``/proc/PID/comm``), or "" once the process is gone."""
        try:
            with open(f"/proc/{self.pid}/comm", encoding="utf-8", errors="replace") as f:
                return f.read().strip()
        except OSError:
            return ""

    def groups(self) -> set[int]:
        """The primary gid plus the user's supplementary groups (from the group database)."""
        gids = {self.gid}
        with contextlib.suppress(KeyError, OSError):
            name = pwd.getpwuid(self.uid).pw_name
            gids.update(os.getgrouplist(name, self.gid))
        return gids


UNKNOWN = Peer(pid=0, uid=-1, gid=-1)


def peer_of(sock: socket.socket | None) -> Peer:
    """The credentials of a connected Unix socket's peer (UNKNOWN for anything else)."""
    if sock is None or sock.family != socket.AF_UNIX:
        return UNKNOWN
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return UNKNOWN
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid=pid, uid=uid, gid=gid)


def _gids(names: Iterable[str | int]) -> set[int]:
    gids: set[int] = set()
    for name in names:
        if isinstance(name, int):
            gids.add(name)
            continue
        with contextlib.suppress(KeyError):
            gids.add(grp.getgrnam(name).gr_gid)
    return gids


@dataclass(frozen=True, slots=True)
class RoleMap:
    """uids and gids per role, resolved once from the configuration."""

    uids: Mapping[str, frozenset[int]]
    gids: Mapping[str, frozenset[int]]

    @classmethod
    def from_config(cls, control: ControlConfig) -> RoleMap:
        """From the ``[control]`` section (group names that do not exist match nobody)."""
        uids = {"read": control.read_uids, "write": control.write_uids,
                "admin": control.admin_uids}
        groups = {"read": control.read_groups, "write": control.write_groups,
                  "admin": control.admin_groups}
        return cls({role: frozenset(ids) for role, ids in uids.items()},
                   {role: frozenset(_gids(names)) for role, names in groups.items()})

    def role(self, peer: Peer) -> str:
        """The highest role the peer has: admin, write, read or none."""
        groups: set[int] | None = None
        for role in ("admin", "write", "read"):
            if peer.uid in self.uids[role]:
                return role
            if self.gids[role]:
                groups = peer.groups() if groups is None else groups
                if groups & self.gids[role]:
                    return role
        return "none"


def allows(have: str, need: str) -> bool:
    """Whether role ``have`` may run an operation that needs ``need``."""
    return ORDER[have] >= ORDER[need]
