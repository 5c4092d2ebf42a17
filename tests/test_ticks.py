"""The one rule for periodic work: the next tick keeps the grid and skips what an overrun missed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from virtmon.ticks import next_tick


def test_work_within_its_interval_runs_on_the_next_tick() -> None:
    """A run that ended before the next tick waits for that tick, not for a full interval."""
    assert next_tick(100.0, 10.0, 103.5) == 110.0


def test_an_overrun_skips_the_missed_ticks_and_keeps_the_phase() -> None:
    """A run that took 2.5 intervals goes on at the third tick, not at once and not off-grid."""
    assert next_tick(100.0, 10.0, 125.0) == 130.0


@given(previous=st.floats(0, 1e6), interval=st.floats(0.01, 1e3), lateness=st.floats(0, 1e4))
def test_the_next_tick_is_on_the_grid_and_not_in_the_past(
    previous: float, interval: float, lateness: float
) -> None:
    """For any overrun: the tick is after now, at most one interval later, on the grid."""
    now = previous + lateness
    tick = next_tick(previous, interval, now)
    assert now <= tick + 1e-6 * max(1.0, now)
    assert tick - interval <= max(now, previous) + 1e-6 * max(1.0, now)
    steps = (tick - previous) / interval
    assert abs(steps - round(steps)) < 1e-6 * max(1.0, steps) and round(steps) >= 1
