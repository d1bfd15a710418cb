"""The one error the main-stream path hands the snapshot worker.

Its own module so the worker can catch it without importing the main-stream decoder (and
PyAV, 17 MB resident) in a service where no camera takes snapshots from a main stream.
"""

from __future__ import annotations

__all__ = ["MainStreamMissError"]


class MainStreamMissError(Exception):
    """The main stream could not serve this snapshot; the message says why."""
