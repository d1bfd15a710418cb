"""Capped exponential backoff with full jitter, shared by camera and broker reconnects."""

from __future__ import annotations

import random


class Backoff:
    """Delays for reconnect attempts: uniform in [0, min(cap, base * 2**attempt)].

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads the
    reconnects of many cameras that failed together, so a recovering server is not hit by
    all of them at once.
    """

    def __init__(self, *, base: float, cap: float, rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base}, cap={cap}")
        self._base = base
        self._cap = cap
        self._attempt = 0
        # Jitter is not security-relevant; a seeded Random keeps tests deterministic.
        self._rng = rng or random.Random()  # noqa: S311

    @property
    def attempt(self) -> int:
        return self._attempt

    def next_delay(self) -> float:
        ceiling = min(self._cap, self._base * (2 ** min(self._attempt, 32)))
        self._attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self._attempt = 0
