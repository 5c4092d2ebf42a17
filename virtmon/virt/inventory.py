"""The inventory: every domain libvirt has, kept current by events and by reconciling.

Reads of the domain list are served from here, not from libvirt. After every (re)connect the
supervisor lists all domains once and :func:`diff` turns the differences into the lifecycle
transitions that were missed while disconnected, marked synthetic; at start-up the inventory
begins from the one last known (``inventory_store``), so a restart reconciles the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from virtmon.virt.states import (
    ACTIVE_STATES,
    CRASHED,
    PAUSED,
    PMSUSPENDED,
    RUNNING,
    SHUTDOWN,
    SHUTOFF,
    STATE_NAMES,
)

# Lifecycle event name -> the state a domain is in afterwards (None: unchanged).
STATE_AFTER_EVENT = {
    "started": RUNNING, "resumed": RUNNING, "suspended": PAUSED, "stopped": SHUTOFF,
    "shutdown": None, "crashed": CRASHED, "pmsuspended": PMSUSPENDED, "defined": None,
    "undefined": None,
}


@dataclass(frozen=True, slots=True)
class DomainState:
    """One domain as the inventory knows it."""

    name: str
    uuid: str
    id: int
    state: int
    reason: int
    persistent: bool

    @property
    def active(self) -> bool:
        """True while the domain runs (has a hypervisor process)."""
        return self.state in ACTIVE_STATES

    @property
    def state_name(self) -> str:
        """The state's name ("running", "shutoff", ...)."""
        known = 0 <= self.state < len(STATE_NAMES)
        return STATE_NAMES[self.state] if known else f"unknown_{self.state}"

    def to_dict(self) -> dict[str, object]:
        """JSON form for the control API."""
        return {
            "name": self.name, "uuid": self.uuid, "id": self.id, "state": self.state_name,
            "state_code": self.state, "reason": self.reason, "persistent": self.persistent,
            "active": self.active,
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """A lifecycle change found by reconciling: (event name, domain before, domain after)."""

    name: str
    before: DomainState | None
    after: DomainState | None

    @property
    def domain(self) -> DomainState:
        """The domain concerned (after if it still exists, else before)."""
        found = self.after or self.before
        assert found is not None
        return found


class Inventory:
    """Domains by UUID."""

    def __init__(self) -> None:
        self._domains: dict[str, DomainState] = {}
        self.populated = False

    def __len__(self) -> int:
        return len(self._domains)

    def all(self) -> list[DomainState]:
        """Every domain, sorted by name."""
        return sorted(self._domains.values(), key=lambda d: d.name)

    def names(self) -> set[str]:
        """Every domain's name (unsorted: each cycle asks, and sorting a thousand took longer
        than the rest)."""
        return {domain.name for domain in self._domains.values()}

    def get(self, uuid: str) -> DomainState | None:
        """The domain with this UUID."""
        return self._domains.get(uuid)

    def find(self, key: str) -> DomainState | None:
        """A domain by name, UUID or numeric id."""
        if key in self._domains:
            return self._domains[key]
        for dom in self._domains.values():
            if dom.name == key or (key.isdigit() and dom.id == int(key) and dom.id > 0):
                return dom
        return None

    def apply_lifecycle(
        self, name: str, uuid: str, event: str, reason: int = 0, domain_id: int = -1
    ) -> None:
        """Update one domain from a lifecycle event (tolerates duplicates and unknown domains).

        ``domain_id`` is the id the event's domain object carries (-1 when inactive).
        """
        current = self._domains.get(uuid)
        if event == "undefined":
            if current is not None and current.active:
                self._domains[uuid] = replace(current, persistent=False)
            else:
                self._domains.pop(uuid, None)
            return
        if current is None:
            current = DomainState(name, uuid, -1, SHUTOFF, 0, persistent=event == "defined")
        if event == "defined":
            current = replace(current, persistent=True)
        state = STATE_AFTER_EVENT.get(event)
        if state is not None:
            current = replace(current, state=state, reason=reason)
            if state == SHUTOFF:
                if not current.persistent:
                    self._domains.pop(uuid, None)  # a transient domain is gone once it stops
                    return
                current = replace(current, id=-1)
        if domain_id > 0 and current.active:
            current = replace(current, id=domain_id)
        self._domains[uuid] = current

    def recall(self, domains: Iterable[DomainState]) -> None:
        """Start from what was last known (a restart): the first listing then reports what
        changed meanwhile, as a reconnect's does."""
        self._domains = {d.uuid: d for d in domains}
        self.populated = True

    def replace_all(self, domains: Iterable[DomainState]) -> list[Transition]:
        """Take a fresh listing as the truth; return what changed since (empty the first time)."""
        fresh = {d.uuid: d for d in domains}
        transitions = [] if not self.populated else list(diff(self._domains, fresh))
        self._domains = fresh
        self.populated = True
        return transitions


def diff(old: dict[str, DomainState], new: dict[str, DomainState]) -> Iterable[Transition]:
    """The lifecycle transitions that lead from ``old`` to ``new``."""
    for uuid, before in old.items():
        if uuid not in new:
            if before.active:
                yield Transition("stopped", before, None)
            if before.persistent:
                yield Transition("undefined", before, None)
    for uuid, after in new.items():
        if uuid not in old:
            if after.persistent:
                yield Transition("defined", None, after)
            if after.active:
                yield Transition(_entered(SHUTOFF, after.state), None, after)
            continue
        before = old[uuid]
        if before.persistent != after.persistent:
            yield Transition("defined" if after.persistent else "undefined", before, after)
        restarted = before.active and after.active and 0 < before.id != after.id
        if restarted:
            # Stopped and started again while we were away.
            yield Transition("stopped", before, replace(after, state=SHUTOFF))
            yield Transition(_entered(SHUTOFF, after.state), before, after)
        elif before.state != after.state:
            yield Transition(_entered(before.state, after.state), before, after)


def _entered(old_state: int, new_state: int) -> str:
    """The lifecycle event name for a change of state."""
    if new_state == RUNNING:
        return "resumed" if old_state == PAUSED else "started"
    return {
        PAUSED: "suspended", SHUTOFF: "stopped", CRASHED: "crashed", PMSUSPENDED: "pmsuspended",
        SHUTDOWN: "shutdown",
    }.get(new_state, "started" if new_state in ACTIVE_STATES else "stopped")
