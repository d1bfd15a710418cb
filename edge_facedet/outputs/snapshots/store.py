"""Snapshot files in `snapshot_dir`: written atomically, bounded in size, age, count and space.

One file per event, `<path>/<camera_id>/<UTC time>-<event_id>.jpg` (the time is the best
face's capture time); a later snapshot of the same event replaces its file. Every call
blocks (file system), so the worker calls it from a thread; a lock makes it safe anyway.

* Atomic: the JPEG goes to a hidden temp file in the same directory (`.<name>.<random>.tmp`),
  is fsynced and then renamed over the final name, and the directory is fsynced. A reader of
  the directory sees whole `.jpg` files or none; temp files a crash left are removed at start.
* Bounded: an in-memory index (storeindex.py; scanned once at start, at most `max_files`
  entries) holds each file's time and size, so a write neither rescans the directory nor
  stats its files. Before each write the oldest files are deleted until the total fits
  `max_bytes` with the new one and no file is older than `max_age_s`; `prune()` applies the
  age bound between writes.
  Files that do not follow the name pattern are not ours: they are neither indexed, counted
  nor deleted.
* Space: no write that would leave less than `min_free_bytes` free (`SnapshotDirFull`), and a
  write that runs out of space midway raises it too, leaving nothing behind.
* Symlinks: everything below `path` is opened relative to directory descriptors with
  O_NOFOLLOW, so a symlink planted in the directory (as a camera folder or a file name) is
  never followed out of it. `path` itself may be a symlink (the operator chose it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edge_facedet.outputs.snapshots.storeindex import (
    FILE_NAME,
    TIME_FORMAT,
    IndexEntry,
    SnapshotIndex,
    file_time,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from edge_facedet.config.snapshots import SnapshotDirConfig

__all__ = ["SnapshotDirError", "SnapshotDirFull", "SnapshotStore"]

FIELD = "snapshot_dir.path"
_CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_MODE = 0o640
_DIR_MODE = 0o750
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class SnapshotDirError(Exception):
    """`snapshot_dir.path` cannot be used: missing, not a directory or not writable."""


class SnapshotDirFull(OSError):  # noqa: N818 - the name the callers know it by
    """The file system has less free space than `min_free_bytes` (or ran out mid-write)."""


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


class SnapshotStore:
    """Snapshot files under one `SnapshotDirConfig`; see the module docstring."""

    def __init__(
        self,
        config: SnapshotDirConfig,
        *,
        clock: Callable[[], datetime] = _utc_now,
        max_files: int = 100_000,
    ) -> None:
        """`clock` gives the current UTC time for the age bound; `max_files` bounds the
        index (and so the number of files, oldest deleted first)."""
        if max_files < 1:
            raise ValueError(f"max_files must be at least 1, got {max_files}")
        self._config = config
        self._root = Path(config.path)
        self._clock = clock
        self._max_files = max_files
        self._lock = threading.Lock()
        self._started = False
        self._index = SnapshotIndex()

    @property
    def path(self) -> Path:
        return self._root

    @property
    def total_bytes(self) -> int:
        """Bytes of the indexed snapshot files."""
        return self._index.total_bytes

    @property
    def file_count(self) -> int:
        return len(self._index)

    # -- start ----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise `SnapshotDirError` unless the directory exists and a file can be created."""
        root = self._root
        try:
            if not root.is_dir():
                problem = "is not a directory" if root.exists() else "does not exist"
                raise SnapshotDirError(f"{FIELD}: {root} {problem}")
        except OSError as exc:
            raise SnapshotDirError(f"{FIELD}: {root} cannot be accessed: {exc.strerror}") from exc
        # Permission bits do not say it (root ignores them, a read-only mount overrides
        # them), so try: create a file and delete it again.
        probe = f".probe-{secrets.token_hex(4)}.tmp"
        try:
            with _open_dir(root) as root_fd:
                fd = os.open(
                    probe,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    _FILE_MODE,
                    dir_fd=root_fd,
                )
                os.close(fd)
                os.unlink(probe, dir_fd=root_fd)
        except OSError as exc:
            raise SnapshotDirError(f"{FIELD}: {root} {_not_writable(exc)}") from exc

    def start(self) -> None:
        """Check the directory, remove crash leftovers, build the index, prune; idempotent."""
        with self._lock:
            if self._started:
                return
            self.check()
            self._scan()
            self._started = True
            self._prune_locked(incoming=0)

    def _scan(self) -> None:
        found: list[IndexEntry] = []
        with _open_dir(self._root) as root_fd:
            for item in os.scandir(root_fd):
                if _is_temp(item.name) and not item.is_dir(follow_symlinks=False):
                    _unlink(item.name, dir_fd=root_fd)
                elif _CAMERA_ID.match(item.name) and item.is_dir(follow_symlinks=False):
                    found.extend(_scan_camera(root_fd, camera_id=item.name))
        found.sort(key=lambda entry: entry.time)
        for entry in found:
            previous = self._index.indexed(entry)
            if previous is not None:
                # A crash between renaming a newer snapshot into place and deleting the
                # event's older one: keep the newer.
                self._delete(previous)
            self._index.add(entry)

    # -- write ----------------------------------------------------------------------------

    def write(self, *, camera_id: str, event_id: str, jpeg: bytes, when: datetime) -> Path:
        """Store `jpeg` as the event's file (replacing its previous one); its path.

        Raises `SnapshotDirFull` when the space is short, `SnapshotDirError` if the
        directory is unusable at the first write, OSError for other file system failures
        and ValueError for ids that are not safe file names or a naive `when`.
        """
        if not _CAMERA_ID.match(camera_id):
            raise ValueError(f"camera id {camera_id!r} is not a safe directory name")
        if not _EVENT_ID.match(event_id):
            raise ValueError(f"event id {event_id!r} is not a safe file name")
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("snapshot time must be timezone-aware")
        if not jpeg:
            raise ValueError("an empty snapshot is not written")
        if len(jpeg) > self._config.max_bytes:
            # Making room would delete every other file and still not fit.
            raise ValueError(
                f"a snapshot of {len(jpeg)} bytes exceeds snapshot_dir.max_bytes "
                f"({self._config.max_bytes})"
            )
        utc = when.astimezone(timezone.utc)
        name = f"{utc.strftime(TIME_FORMAT)}-{event_id}.jpg"
        self.start()
        with self._lock:
            self._require_space(len(jpeg))
            self._prune_locked(incoming=len(jpeg))
            try:
                with _open_dir(self._root) as root_fd, _camera_dir(root_fd, camera_id) as dir_fd:
                    _write_atomically(dir_fd, name=name, data=jpeg)
                    self._replace(
                        IndexEntry(
                            camera_id=camera_id,
                            name=name,
                            time=utc.timestamp(),
                            size=len(jpeg),
                            seq=0,
                        )
                    )
                    # The rename is durable only once the directory itself is on disk.
                    os.fsync(dir_fd)
            except OSError as exc:
                if exc.errno in _NO_SPACE and not isinstance(exc, SnapshotDirFull):
                    raise SnapshotDirFull(
                        exc.errno, f"{FIELD}: {self._root}: no space left: {exc.strerror}"
                    ) from exc
                raise
        return self._root / camera_id / name

    def _require_space(self, incoming: int) -> None:
        stats = os.statvfs(self._root)
        free = stats.f_bavail * stats.f_frsize
        if free - incoming < self._config.min_free_bytes:
            raise SnapshotDirFull(
                errno.ENOSPC,
                f"{FIELD}: {self._root} has {free} bytes free, a snapshot would leave less "
                f"than min_free_bytes ({self._config.min_free_bytes})",
            )

    # -- pruning --------------------------------------------------------------------------

    def prune(self) -> int:
        """Delete the files past the age bound (also done by every write); how many."""
        self.start()
        with self._lock:
            return self._prune_locked(incoming=0)

    def _prune_locked(self, *, incoming: int) -> int:
        """Delete oldest first until `incoming` more bytes and one more file fit the bounds
        (`incoming=0`: until the present files fit) and nothing is too old."""
        oldest_allowed = self._clock().timestamp() - self._config.max_age_s
        max_files = self._max_files - (1 if incoming else 0)
        deleted = 0
        while (entry := self._index.oldest()) is not None:
            over = (
                self._index.total_bytes + incoming > self._config.max_bytes
                or len(self._index) > max_files
                or entry.time < oldest_allowed
            )
            if not over:
                break
            self._delete(entry)
            deleted += 1
        return deleted

    # -- index ----------------------------------------------------------------------------

    def _replace(self, entry: IndexEntry) -> None:
        """Index the file just renamed into place; delete the event's previous file."""
        previous = self._index.indexed(entry)
        if previous is not None and previous.name != entry.name:
            self._delete(previous)
        elif previous is not None:
            self._index.forget(previous)  # overwritten by the rename
        self._index.add(entry)

    def _delete(self, entry: IndexEntry) -> None:
        """Delete the file, then forget it: if deleting fails (a read-only remount), the
        index still counts it and a later write tries again."""
        try:
            with (
                _open_dir(self._root) as root_fd,
                _camera_dir(root_fd, entry.camera_id, create=False) as camera_fd,
            ):
                _unlink(entry.name, dir_fd=camera_fd)
        except FileNotFoundError:
            pass  # the camera folder is gone (removed by hand): so is the file
        self._index.forget(entry)


def _scan_camera(root_fd: int, *, camera_id: str) -> list[IndexEntry]:
    """The camera folder's snapshot files; removes temp files a crash left in it."""
    entries: list[IndexEntry] = []
    try:
        camera_fd = os.open(camera_id, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=root_fd)
    except OSError:
        return entries  # swapped for something else since scandir: not ours
    try:
        for item in os.scandir(camera_fd):
            if _is_temp(item.name) and not item.is_dir(follow_symlinks=False):
                _unlink(item.name, dir_fd=camera_fd)
                continue
            match = FILE_NAME.match(item.name)
            if match is None or not item.is_file(follow_symlinks=False):
                continue
            when = file_time(match.group(1))
            if when is None:
                continue  # digits that are no date: not a name we wrote
            entries.append(
                IndexEntry(
                    camera_id=camera_id,
                    name=item.name,
                    time=when,
                    size=item.stat(follow_symlinks=False).st_size,
                    seq=0,
                )
            )
    finally:
        os.close(camera_fd)
    return entries


def _not_writable(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "is not writable: the file system is mounted read-only"
    if exc.errno in {errno.EACCES, errno.EPERM}:
        return f"is not writable by this user (uid {os.geteuid()}): {exc.strerror}"
    if exc.errno in {errno.ENOSPC, errno.EDQUOT}:
        return f"is not writable: no space left ({exc.strerror})"
    if exc.errno == errno.ENOENT:
        return "does not exist"
    return f"is not writable: {exc.strerror}"


@contextlib.contextmanager
def _open_dir(path: Path) -> Iterator[int]:
    fd = os.open(path, _DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _camera_dir(root_fd: int, camera_id: str, *, create: bool = True) -> Iterator[int]:
    """The camera's folder below `root_fd`, never through a symlink (ELOOP/ENOTDIR)."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(camera_id, _DIR_MODE, dir_fd=root_fd)
    try:
        fd = os.open(camera_id, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=root_fd)
    except OSError as exc:
        if exc.errno in {errno.ELOOP, errno.ENOTDIR}:
            raise OSError(
                exc.errno, f"{camera_id} in {FIELD} is a symlink or not a directory: not used"
            ) from exc
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def _write_atomically(dir_fd: int, *, name: str, data: bytes) -> None:
    temp = f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            _FILE_MODE,
            dir_fd=dir_fd,
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink(temp, dir_fd=dir_fd)
        raise


def _unlink(name: str, *, dir_fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
