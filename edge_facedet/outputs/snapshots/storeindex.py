"""The snapshot store's file names and its in-memory index of them (store.py).

A snapshot file is `<UTC time>-<event_id>.jpg` in its camera's folder; names that do not
follow that pattern are not the store's. The index holds each file's time and size by
(camera, event), oldest first, so the store's bounds are kept without rescanning the
directory or statting its files. It does no I/O and takes no lock: the store holds its own.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = ["FILE_NAME", "TIME_FORMAT", "IndexEntry", "SnapshotIndex", "file_time"]

TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
FILE_NAME = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)-([A-Za-z0-9][A-Za-z0-9_-]{0,199})\.jpg$")


@dataclass(slots=True)
class IndexEntry:
    camera_id: str
    name: str
    time: float
    """POSIX seconds of the snapshot's time (from the file name)."""
    size: int
    seq: int
    """Which heap item is current for this event (older ones are skipped as stale)."""

    @property
    def key(self) -> tuple[str, str]:
        """(camera id, event id): a later snapshot of the event replaces this one."""
        return (self.camera_id, _event_of(self.name))


class SnapshotIndex:
    """Indexed snapshot files by event, and a heap of them by time for pruning."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], IndexEntry] = {}
        self._heap: list[tuple[float, int, tuple[str, str]]] = []
        self._seq = 0
        self._total = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        return self._total

    def indexed(self, entry: IndexEntry) -> IndexEntry | None:
        """The indexed file of `entry`'s event, if any."""
        return self._entries.get(entry.key)

    def oldest(self) -> IndexEntry | None:
        """The oldest indexed file (it stays indexed); None when there is none."""
        while self._heap:
            _, seq, key = self._heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq:
                return entry
            heapq.heappop(self._heap)  # superseded by a later write of the same event
        return None

    def add(self, entry: IndexEntry) -> None:
        self._seq += 1
        entry.seq = self._seq
        key = entry.key
        self._entries[key] = entry
        self._total += entry.size
        heapq.heappush(self._heap, (entry.time, entry.seq, key))
        if len(self._heap) > 2 * len(self._entries) + 64:
            # Every replaced snapshot leaves a stale heap item; rebuild before they pile up.
            self._heap = [(e.time, e.seq, k) for k, e in self._entries.items()]
            heapq.heapify(self._heap)

    def forget(self, entry: IndexEntry) -> None:
        key = entry.key
        if self._entries.get(key) is entry:
            del self._entries[key]
            self._total -= entry.size


def file_time(text: str) -> float | None:
    """POSIX seconds of a file name's UTC time; None if it is no valid time."""
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _event_of(name: str) -> str:
    match = FILE_NAME.match(name)
    if match is None:  # pragma: no cover - only names of this pattern are indexed
        raise ValueError(f"not a snapshot file name: {name}")
    return match.group(2)
