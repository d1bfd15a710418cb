"""Start-up settings of glibc's malloc for a process of many decoding threads.

glibc gives a thread that allocates while the arenas are busy an arena of its own, up to
eight per core, and memory freed into an arena stays with that arena. Every camera reader
is a thread that decodes and, for each due frame, converts a full-size picture (megabytes)
and frees it again: with an arena per reader, each one keeps its decoder's and pictures'
freed blocks for itself, and the service's memory grows by that much per camera (measured
with benchmarks/memory.py). With the arenas bounded (`ARENA_MAX`), the threads reuse the
blocks any of them freed.

Shared arenas change how glibc's adaptive thresholds behave: the top of a shared heap is
often a freed picture, which glibc returns to the system and faults back in for the next one
(page faults per frame, CPU), and a block that gets its own mapping costs the same. The
thresholds are therefore fixed: blocks below `MMAP_THRESHOLD` (a 4K BGR frame is) come from
the arenas, and a heap's free top is returned once it exceeds `TRIM_THRESHOLD`.

`tune_malloc` runs once, first thing at start-up (`edge-facedet run`), before any thread has
allocated. An environment that sets any of these itself (MALLOC_ARENA_MAX,
MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_, or `glibc.malloc.*` in
GLIBC_TUNABLES) is tuning malloc its own way, and nothing is changed. Other C libraries
(musl, macOS) have none of these settings; nothing is done there either.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ARENA_MAX", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

ARENA_MAX = 2
"""The main thread's heap and one arena for every other thread."""
MMAP_THRESHOLD = 32 << 20
"""glibc's largest: blocks up to this size come from the arenas, not mappings of their own."""
TRIM_THRESHOLD = 16 << 20
"""A heap's free top up to this size is kept for the next pictures (two 1080p BGR frames)."""
# glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_VARIABLES = (
    "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
)  # fmt: skip


def _environment_tunes(environ: Mapping[str, str]) -> bool:
    """Whether the environment sets malloc's parameters itself (glibc read them at exec)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    names = (item.partition("=")[0].strip() for item in tunables.split(":"))
    return any(name in environ for name in _VARIABLES) or any(
        name.startswith("glibc.malloc.") for name in names
    )


def tune_malloc(*, environ: Mapping[str, str]) -> bool:
    """Set `ARENA_MAX`, `MMAP_THRESHOLD` and `TRIM_THRESHOLD` in glibc's malloc; whether it
    did (not on another C library, nor when the environment tunes malloc). Call it before
    other threads start: glibc fixes its arena bound when it first needs one."""
    if _environment_tunes(environ):
        return False
    try:
        process = ctypes.CDLL(None)
        process.gnu_get_libc_version  # noqa: B018 - present in glibc only
        mallopt = process.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settings = (
        (_M_ARENA_MAX, ARENA_MAX),
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    )
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
