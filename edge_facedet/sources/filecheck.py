"""The check a file camera's path passes before a decoder opens it, bounded in time.

A decoder's open of a path can block without end where Python cannot bound it: `open()` of a
FIFO waits for a writer, and any system call on a hung network mount waits for the server.
Under OpenCV such an open also holds the process-wide lock its FFmpeg backend opens every
capture under, so one such camera kept every other camera from (re)opening. The check runs in
a short-lived helper thread that the reader waits for at most the open timeout:

- the path must be a regular file (a device is left to its decoder); a FIFO, socket or
  directory is refused with one line naming what it is;
- the file must open and its first and last bytes (where MP4 keeps its index) be readable,
  so a mount that does not answer is found here, outside the decoder's lock.

A check that never returns leaves its daemon thread behind; while it is still blocked the next
check is refused at once instead of starting another, so a hung mount costs one thread per
camera, not one per reconnect attempt.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge_facedet.sources.urls import scheme_of

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["FileCheck", "FileCheckError", "file_path", "inspect_file"]

PROBE_BYTES = 4096
"""Bytes read at the start and at the end of the file."""


class FileCheckError(Exception):
    """The path cannot be handed to a decoder; the message is the reason, never the path."""


def file_path(url: str) -> str:
    """The path FFmpeg's file protocol opens for a file camera's URL (`file:` stripped)."""
    return url[len("file:") :] if scheme_of(url) == "file" else url


def inspect_file(path: str) -> None:
    """Raise `FileCheckError` unless `path` is a device or a readable regular file."""
    try:
        mode = Path(path).stat().st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            return  # a device: its decoder knows how to open it
        _refuse_irregular(mode)
        # O_NONBLOCK: if the path became a FIFO since the stat, the open returns at once.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            status = os.fstat(descriptor)
            _refuse_irregular(status.st_mode)
            os.pread(descriptor, PROBE_BYTES, 0)
            if status.st_size > PROBE_BYTES:
                os.pread(descriptor, PROBE_BYTES, status.st_size - PROBE_BYTES)
        finally:
            os.close(descriptor)
    except OSError as exc:
        raise FileCheckError(exc.strerror or type(exc).__name__) from None


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _refuse_irregular(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    raise FileCheckError(f"not a regular file ({kind})")


class FileCheck:
    """Runs a file camera's check in a helper thread, waiting for it at most a timeout.

    One per file session; not thread-safe (only its reader thread calls `run`).
    """

    def __init__(
        self, *, path: str, name: str, inspect: Callable[[str], None] = inspect_file
    ) -> None:
        self._path = path
        self._name = name
        self._inspect = inspect
        self._pending: threading.Thread | None = None
        self._pending_since = 0.0

    def run(self, *, timeout_s: float) -> None:
        """Return once the path passed; raise `FileCheckError` when it did not or the check
        took longer than `timeout_s`."""
        now = time.monotonic()
        if self._pending is not None and self._pending.is_alive():
            raise FileCheckError(
                "the file system has not answered an earlier check for "
                f"{now - self._pending_since:.1f} s (a hung mount?)"
            )
        outcome: list[BaseException | None] = []

        def check() -> None:
            try:
                self._inspect(self._path)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting reader
                outcome.append(exc)
            else:
                outcome.append(None)

        thread = threading.Thread(target=check, name=self._name, daemon=True)
        self._pending, self._pending_since = thread, now
        thread.start()
        thread.join(timeout_s)
        if not outcome:
            raise FileCheckError(f"the file system did not answer; gave up after {timeout_s:.1f} s")
        self._pending = None
        error = outcome[0]
        if isinstance(error, FileCheckError):
            raise error
        if error is not None:
            raise FileCheckError(f"unexpected {type(error).__name__}") from None
