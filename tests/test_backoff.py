"""`Backoff`: full-jitter delays within [0, min(cap, base * 2**attempt)], growth, cap, reset.

A seeded `random.Random` makes every draw reproducible; the bounds are checked against the
formula over many draws, and the spread shows the jitter really is full (down to near 0 and
up to near the ceiling), which is what spreads the reconnects of cameras that failed together.
"""

from __future__ import annotations

import random

import pytest

from edge_facedet.backoff import Backoff


def seeded(seed: int) -> random.Random:
    # Jitter is not security-relevant; a seeded generator makes every draw reproducible.
    return random.Random(seed)  # noqa: S311


def ceilings(base: float, cap: float, attempts: int) -> list[float]:
    return [min(cap, base * 2**attempt) for attempt in range(attempts)]


def test_each_delay_is_within_its_attempts_ceiling() -> None:
    for seed in range(50):
        backoff = Backoff(base=0.5, cap=30.0, rng=seeded(seed))
        delays = [backoff.next_delay() for _ in range(12)]
        for attempt, (delay, ceiling) in enumerate(
            zip(delays, ceilings(0.5, 30.0, 12), strict=True)
        ):
            assert 0.0 <= delay <= ceiling, (seed, attempt, delay, ceiling)


def test_ceiling_doubles_until_the_cap_then_stays() -> None:
    # Per attempt, the largest of many seeded draws approaches that attempt's ceiling.
    attempts = 9
    largest = [0.0] * attempts
    smallest = [float("inf")] * attempts
    for seed in range(400):
        backoff = Backoff(base=1.0, cap=60.0, rng=seeded(seed))
        for attempt in range(attempts):
            delay = backoff.next_delay()
            largest[attempt] = max(largest[attempt], delay)
            smallest[attempt] = min(smallest[attempt], delay)
    expected = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert ceilings(1.0, 60.0, attempts) == expected
    for attempt, ceiling in enumerate(expected):
        assert 0.95 * ceiling <= largest[attempt] <= ceiling, (attempt, largest[attempt])
        assert smallest[attempt] <= 0.05 * ceiling, (attempt, smallest[attempt])  # full jitter


def test_same_seed_same_delays_and_attempt_counts() -> None:
    first = Backoff(base=0.1, cap=5.0, rng=seeded(7))
    second = Backoff(base=0.1, cap=5.0, rng=seeded(7))
    a = [first.next_delay() for _ in range(10)]
    b = [second.next_delay() for _ in range(10)]
    assert a == b
    assert first.attempt == 10
    assert len(set(a)) == 10


def test_reset_starts_again_from_the_base() -> None:
    backoff = Backoff(base=1.0, cap=100.0, rng=seeded(3))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.attempt == 6
    backoff.reset()
    assert backoff.attempt == 0
    # After a reset the first ceiling is the base again: over many draws none exceeds it.
    draws = []
    for _ in range(200):
        backoff.reset()
        draws.append(backoff.next_delay())
    assert max(draws) <= 1.0
    assert max(draws) >= 0.95


def test_many_attempts_neither_overflow_nor_pass_the_cap() -> None:
    backoff = Backoff(base=0.01, cap=600.0, rng=seeded(11))
    delays = [backoff.next_delay() for _ in range(2000)]
    assert all(0.0 <= d <= 600.0 for d in delays)
    assert backoff.attempt == 2000


def test_cap_equal_to_base_gives_a_constant_ceiling() -> None:
    backoff = Backoff(base=2.0, cap=2.0, rng=seeded(5))
    assert all(0.0 <= backoff.next_delay() <= 2.0 for _ in range(100))


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_invalid_bounds_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(base=base, cap=cap)


def test_without_an_rng_delays_still_differ_between_instances() -> None:
    # Two cameras that fail together must not reconnect in lock-step.
    a = [Backoff(base=1.0, cap=30.0).next_delay() for _ in range(20)]
    assert len(set(a)) > 1
