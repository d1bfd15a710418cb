"""How busy the shared test machine is, for the few bars on pauses, rates and latency."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def overload_factor() -> float:
    """How far the machine is beyond busy: 1 up to 2 runnable tasks per core, then linear.

    The machine is shared with other test runs (load averages of 20 on 2 cores were seen).
    Bars on pauses, rates and latency are scaled by this (each test caps it, so the fault
    the bar exists for still fails it): a starved process pauses everything it runs, which
    says nothing about the isolation, pacing or queueing the bar checks.
    """
    load_1min = float(Path("/proc/loadavg").read_text().split()[0])
    return max(1.0, load_1min / (2 * (os.cpu_count() or 1)))


def load_slack(*, cap: float, what: str) -> float:
    """`overload_factor()` capped at `cap`, logged with the raw load average under `what`.

    The one way a timing bar widens with the load: `bar * load_slack(...)` for an upper bound,
    `bar / load_slack(...)` for a lower one. `cap` keeps the widest bar short of what the
    broken property would give, so the test still fails on it however busy the machine is.
    """
    slack = min(cap, overload_factor())
    load_1min = Path("/proc/loadavg").read_text().split()[0]
    logging.getLogger(__name__).info(
        "%s: load %s on %d cores, bars widened %.2fx (cap %.2f)",
        what, load_1min, os.cpu_count() or 1, slack, cap,
    )  # fmt: skip
    return slack
