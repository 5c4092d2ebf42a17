"""What the daemon asks of each of its parts: take a reloaded section, and say how it is.

A reload (virtmon.reload) validates the new file, keeps the running value of every key whose field
is not declared reloadable, and hands each component its section of what results: the component
applies what changed inside itself, or answers the keys that wait for a restart. ``GET
/v1/status``, systemd's ``STATUS=`` and ``virtmonctl status`` are assembled from the components'
``status()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from virtmon.config import Config

# The ``section.key`` names a component could not apply: they keep their running value.
Restart = tuple[str, ...]

S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)


class Reconfigurable(Protocol[S_contra]):
    """A component a reload reconfigures with its section of the configuration."""

    async def reconfigure(self, section: S_contra) -> Restart:
        """Apply ``section``; the keys that need a restart instead (kept as they run)."""
        ...


class Reports(Protocol):
    """A component that says how it is, for ``/v1/status`` (JSON values)."""

    def status(self) -> dict[str, Any]:
        """This component's part of the daemon's status."""
        ...


@dataclass(frozen=True, slots=True)
class Part(Generic[S]):
    """A component, and which section of a configuration it takes."""

    component: Reconfigurable[S]
    section: Callable[[Config], S]

    async def reconfigure(self, cfg: Config) -> Restart:
        """Hand the component its section of ``cfg``."""
        return await self.component.reconfigure(self.section(cfg))
