"""The one backoff rule: exponential steps, capped, each with jitter between half and all."""

from __future__ import annotations

import random

from virtmon.backoff import backoff


def test_each_wait_is_between_half_and_all_of_its_doubling_step() -> None:
    """The n-th wait lies in [step/2, step] with step = initial x 2^(n-1), capped at maximum,
    and the jitter spreads over that range."""
    rng = random.Random(7)
    for attempt, step in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (10**6, 30.0)):
        waits = [backoff(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert all(step / 2 <= wait <= step for wait in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > step / 4, attempt  # not one fixed factor


def test_attempt_zero_or_below_waits_the_first_step() -> None:
    """A count that starts at 0 waits the first step, not less."""
    assert 0.25 <= backoff(0, 0.5, 30.0) <= 0.5
