"""Power-of-two log throttling: a fault that repeats is logged at once, then ever more rarely.

A camera that is down for days, a consumer with a persistent bug or a service manager that
stopped reading its socket repeats the same fault for as long as it lasts. Logging its 1st,
2nd, 4th, 8th ... occurrence shows it at once, keeps the count in the journal, and costs a
line count logarithmic in its duration instead of one line per occurrence.
"""

from __future__ import annotations


def every_power_of_two(count: int) -> bool:
    """Whether the `count`-th occurrence (1, 2, 4, 8, ...) is one to log.

    0 counts too, so a zero-based attempt number logs its first attempt (0) and then the
    same powers of two.
    """
    return count & (count - 1) == 0
