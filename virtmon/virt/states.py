"""virDomainState, the one table of domain state names: by code, as libvirt numbers them
(libvirt-domain.h, enum virDomainState; part of libvirt's ABI, so a plain table needs no binding).

The inventory names a domain's state with it, the collectors label the state metrics with it,
and the control API checks libvirt's constants against it (virtmon.control.operations.names).
"""

from __future__ import annotations

STATE_NAMES: tuple[str, ...] = (
    "nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsuspended",
)
RUNNING, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = 1, 3, 4, 5, 6, 7
# States in which the domain has a hypervisor process (running, blocked, paused, shutting down,
# suspended to memory): only then are its statistics the domain's own.
ACTIVE_STATES = frozenset((1, 2, PAUSED, SHUTDOWN, PMSUSPENDED))
