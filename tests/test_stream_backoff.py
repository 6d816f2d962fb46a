"""Backoff: the reconnection schedule, deterministic with a seeded RNG."""

from __future__ import annotations

import random
from typing import Any

import pytest

from querysync import ConfigurationError
from querysync.streams import Backoff


def test_default_schedule_is_the_reference_clients_without_jitter() -> None:
    backoff = Backoff(jitter=0.0)
    # The reference web client: min(1000 * 1.5 ** (n - 1), 30000) ms.
    expected = [1.0, 1.5, 2.25, 3.375, 5.0625, 7.59375, 11.390625, 17.0859375, 25.62890625]
    assert [backoff.delay(n) for n in range(1, 10)] == pytest.approx(expected)
    assert [backoff.delay(n) for n in (10, 11, 50)] == [30.0, 30.0, 30.0]


def test_jitter_is_added_on_top_and_bounded() -> None:
    backoff = Backoff(rng=random.Random(7))
    for n in range(1, 40):
        base = backoff.base_delay(n)
        for _ in range(20):
            assert base <= backoff.delay(n) <= base * 1.25
    assert backoff.base_delay(40) == 30.0


def test_jitter_repeats_with_the_same_seed_and_spreads_clients() -> None:
    first = Backoff(rng=random.Random(1))
    again = Backoff(rng=random.Random(1))
    assert [first.delay(n) for n in range(1, 8)] == [again.delay(n) for n in range(1, 8)]
    spread = {Backoff(rng=random.Random(seed)).delay(3) for seed in range(10)}
    assert len(spread) == 10  # ten clients of one restarted server come back apart


def test_custom_schedule_grows_and_caps() -> None:
    backoff = Backoff(initial=0.01, factor=2.0, max_delay=0.04, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.01, 0.02, 0.04, 0.04, 0.04]


def test_a_huge_attempt_number_stays_at_the_cap() -> None:
    assert Backoff(jitter=0.0).delay(100_000) == 30.0


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        Backoff().delay(0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1.0},
        {"factor": 0.5},
        {"initial": 5.0, "max_delay": 1.0},
        {"jitter": -0.1},
        {"max_delay": float("inf")},
    ],
)
def test_bad_schedules_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(**kwargs)
