"""The one rule for how long to wait before trying again: exponential backoff with jitter.

The n-th wait in a row (n from 1) is ``initial`` x 2^(n-1), at most ``maximum``, times a random
factor from 0.5 to 1 ("equal jitter": never less than half the step, so a retry cannot come
at once; never more than the step, so ``maximum`` is a true bound). Many daemons that lost the
same peer at the same moment (a restarted libvirtd, a receiver back from an outage) do not come
back in step.

It paces libvirt's reconnections (virtmon.virt.connection), the admin helper's restarts
(virtmon.admin.client) and webhook retries (virtmon.alerts.delivery).
"""

from __future__ import annotations

import random

# The exponent is capped: 2.0 ** 1024 overflows, and a peer down for long (or a small maximum)
# reaches a thousand attempts; 2 ** 64 is past any maximum.
MAX_DOUBLINGS = 64


def backoff(attempt: int, initial: float, maximum: float,
            rng: random.Random | None = None) -> float:
    """Seconds to wait before the try after the ``attempt``-th failure in a row (from 1)."""
    doublings = min(max(0, attempt - 1), MAX_DOUBLINGS)
    step = min(maximum, initial * 2.0 ** doublings)
    return float(step * (rng or random).uniform(0.5, 1.0))
