"""The soak benchmark's figures (bench/bench_soak.py): growth by quarters and lost events."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.bench_soak import events_lost, growth, quarter_medians, sequence_gaps


def test_quarter_medians_are_the_medians_of_four_consecutive_quarters() -> None:
    """Eight samples fall two to a quarter, in order, none in two quarters (the lower of two
    is the median by nearest rank); a spike in one quarter moves no other."""
    assert quarter_medians([1, 9, 2, 9, 3, 9, 4, 9]) == [1, 2, 3, 4]
    assert quarter_medians([1, 1, 2, 2, 3, 3, 4, 400]) == [1, 2, 3, 4]


def test_growth_compares_the_last_quarter_with_the_first_and_with_the_third() -> None:
    """A series that rises 10 % over the run and then stops is not flat (growth), one that
    wanders within 1 % and ends where it began is; rising only in the last half is caught."""
    rising = growth([100, 100, 102, 102, 110, 110, 110, 110])
    assert rising["growth_pct"] == pytest.approx(10.0)
    assert rising["last_half_growth_pct"] == pytest.approx(0.0)
    assert not rising["flat"]
    wandering = growth([100, 101, 100, 99, 101, 100, 100, 100])
    assert wandering["flat"]
    late = growth([100, 100, 100, 100, 100, 100, 102, 102])
    assert late["growth_pct"] == pytest.approx(2.0)
    assert late["last_half_growth_pct"] == pytest.approx(2.0)
    assert not late["flat"]


def test_growth_from_nothing_is_infinite_and_nothing_to_nothing_is_flat() -> None:
    """An outbox empty at the start and holding rows at the end grew; one empty throughout
    did not."""
    assert growth([0, 0, 0, 0, 3, 3, 3, 3])["growth_pct"] == float("inf")
    assert growth([0] * 8)["flat"]


def test_growth_needs_four_samples() -> None:
    """Fewer samples than quarters is an error, not a figure."""
    with pytest.raises(ValueError, match="at least 4"):
        growth([1, 2, 3])


def test_sequence_gaps_counts_missing_numbers_and_repeats() -> None:
    """From after 10: 11, 12, 15 (13 and 14 missing), 15 again and 14 late (repeats), 16."""
    assert sequence_gaps([11, 12, 15, 15, 14, 16], after=10) == {"missing": 2, "repeated": 2}
    assert sequence_gaps([11, 12, 13], after=10) == {"missing": 0, "repeated": 0}
    assert sequence_gaps([13], after=10) == {"missing": 2, "repeated": 0}


def test_events_lost_counts_each_name_short_and_extras_do_not_make_up() -> None:
    """Two 'started' short is two lost, even with three 'stopped' more than expected."""
    expected = Counter({"started": 5, "stopped": 5})
    received = Counter({"started": 3, "stopped": 8})
    assert events_lost(expected, received) == 2
    assert events_lost(expected, Counter(expected)) == 0
