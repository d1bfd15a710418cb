"""Reading the small files a configuration names: regular files only, bounded, UTF-8.

The config file itself, password files and systemd credentials are read the same way. A FIFO
would block `open()` until a writer appears (`check-config` and `run` hung on one), a device
such as /dev/zero never ends and a directory is no text: all are refused before any read,
with the kind named. The open is non-blocking and the check is made on the opened file
(`fstat`), so the file cannot be swapped for a FIFO between the check and the read.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class TextFileError(Exception):
    """Why a file cannot be used, as a phrase to follow its name: "cannot be read: ...",
    "is not a regular file (a FIFO)", "is larger than ...", "is not UTF-8 text ..."."""


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _open_regular(path: Path) -> int:
    """A descriptor of `path`, opened without blocking, if it is a regular file."""
    try:
        # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a
        # writer; it changes nothing for a regular file. O_NOCTTY: a terminal never becomes
        # the controlling one.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise TextFileError(f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    except ValueError as exc:  # an embedded NUL
        raise TextFileError(f"cannot be read: {exc}") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise TextFileError(f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    if stat.S_ISREG(mode):
        return fd
    os.close(fd)
    if stat.S_ISDIR(mode):
        raise TextFileError(f"cannot be read: {os.strerror(errno.EISDIR)}")
    raise TextFileError(f"is not a regular file ({_kind(mode)})")


def read_text_file(path: Path, *, limit: int) -> str:
    """The UTF-8 text of the regular file `path`, at most `limit` bytes.

    Raises `TextFileError` with a phrase that names what is wrong, never the content.
    """
    fd = _open_regular(path)
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise TextFileError(f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > limit:
        raise TextFileError(f"is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextFileError(f"is not UTF-8 text (invalid byte at offset {exc.start})") from None


def check_regular_file(path: Path) -> None:
    """Raise `TextFileError` unless `path` is a regular file this process can open."""
    os.close(_open_regular(path))
