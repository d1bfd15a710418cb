"""`@pytest.mark.alone`: a test that measures time or throughput runs with no other test beside
it, also when pytest-xdist runs the suite in parallel (`.ci/run` does).

Two lock files shared by the run's workers make a readers-writer lock with a turnstile: every
test holds the room shared; an `alone` test holds it exclusively. A test passes the turnstile
to enter, and an `alone` test keeps the turnstile until it has the room, so the other workers
start no test while it waits for the running ones to end (it is not starved). The files live
in a folder named after the controller (the workers' parent process), which removes it at
the end of the run. Without xdist there is no one to wait for, and no lock is taken.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


def _folder(controller_pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"edge-facedet-tests-{controller_pid}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return (yield)
    folder = _folder(os.getppid())  # xdist's workers are the controller's children
    folder.mkdir(exist_ok=True)
    alone = item.get_closest_marker("alone") is not None
    with (folder / "turnstile").open("a") as turnstile, (folder / "room").open("a") as room:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            return (yield)
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller of a parallel run removes its workers' lock folder."""
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(_folder(os.getpid()), ignore_errors=True)
