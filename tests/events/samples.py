"""Sample events for the bus, journal and stream tests."""

from __future__ import annotations

import time

from virtmon.events.model import Event


def ev(n: int = 0, domain: str | None = "a", kind: str = "lifecycle") -> Event:
    """An unnumbered event; ``n`` goes into the payload."""
    return Event(time=time.time(), uri="test:///default", kind=kind, name="started",
                 domain=domain, payload={"n": n})
