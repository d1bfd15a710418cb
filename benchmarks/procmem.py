"""A process's memory from /proc, in parts: `footprint`, and tables of several readings.

`footprint` reads VmRSS, VmHWM, anonymous and file-backed memory and the threads from
/proc/<pid>/status, and puts each mapping's resident memory (/proc/<pid>/smaps) in a part:
glibc's thread arenas (heaps at 64 MB-aligned addresses), the main heap, CPython's 1 MB
object arenas, other anonymous mappings (blocks mapped on their own, stacks, JIT code), the
model files, and the shared libraries by owner (`LIBRARY_PARTS`). `fit` and `step_table`
give each figure's fixed share and its share per camera over readings at several counts.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARENA_BYTES = 64 << 20
"""glibc's thread arenas are heaps of at most this size, mmapped at an address aligned to it."""
PYMALLOC_ARENA_BYTES = 1 << 20
"""CPython's small-object allocator takes memory from the system in arenas of this size."""
LIBRARY_PARTS = {
    "OpenVINO libraries": ("openvino", "/libtbb"),
    "OpenCV + FFmpeg libraries": ("/cv2/", "/opencv"),
    "PyAV + FFmpeg libraries": ("/av/", "/av.libs/"),
    "interpreter": ("/libpython", "/bin/python"),
}
"""Shared libraries by owner, by a mark in their path (first match)."""
MB = 1024.0


@dataclass
class Footprint:
    """One reading of a process's memory (MB) and threads."""

    rss: float
    hwm: float
    anon: float
    file: float
    threads: int
    arenas: int
    parts: dict[str, float] = field(default_factory=dict)


def part_of(*, path: str, start: int, size: int) -> str:  # noqa: PLR0911 - a table
    """The part a mapping's resident memory is counted in (see the module docstring)."""
    name = path.rsplit("/", 1)[-1]
    if path == "[heap]":
        return "main heap"
    if not path or path.startswith(("[anon", "[stack")):
        if start % ARENA_BYTES == 0 and size <= ARENA_BYTES:
            return "malloc arenas"
        if size == PYMALLOC_ARENA_BYTES:
            return "Python objects (pymalloc)"
        return "other anonymous"
    if name.endswith((".bin", ".xml", ".blob")) or ("/openvino/" in path and "cache" in path):
        return "model files"
    for part, marks in LIBRARY_PARTS.items():
        if any(mark in path for mark in marks):
            return part
    return "other libraries"


def footprint(pid: int) -> Footprint:
    """A process's memory now, from /proc/<pid>/status and /proc/<pid>/smaps."""
    lines = Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines()
    status = {key: value.strip() for key, _, value in (x.partition(":") for x in lines)}
    parts: dict[str, float] = {}
    arenas = 0
    start = size = 0
    part = ""
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as smaps:  # noqa: PTH123
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                low, high = (int(x, 16) for x in fields[0].split("-"))
                start, size = low, high - low
                part = part_of(path=" ".join(fields[5:]), start=start, size=size)
                arenas += part == "malloc arenas" and fields[1] == "rw-p"
            elif fields[0] == "Rss:":
                parts[part] = parts.get(part, 0.0) + int(fields[1]) / MB

    def kb(key: str) -> float:
        return int(status[key].split()[0]) / MB

    return Footprint(
        rss=kb("VmRSS"), hwm=kb("VmHWM"), anon=kb("RssAnon"), file=kb("RssFile"),
        threads=int(status["Threads"]), arenas=arenas, parts=parts,
    )  # fmt: skip


def cpu_s(pid: int) -> tuple[float, int]:
    """User + system CPU seconds and minor page faults of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def summarise(readings: list[Footprint]) -> dict[str, Any]:
    """Medians over the window; VmHWM and the parts from the last reading."""
    last = readings[-1]
    return {
        "rss_mb": round(statistics.median(r.rss for r in readings), 1),
        "hwm_mb": round(last.hwm, 1),
        "anon_mb": round(statistics.median(r.anon for r in readings), 1),
        "file_mb": round(statistics.median(r.file for r in readings), 1),
        "threads": last.threads,
        "arenas": last.arenas,
        "parts": {k: round(v, 1) for k, v in sorted(last.parts.items())},
    }


def fit(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """Least-squares fixed share and slope per camera of `key` (`parts/<part>`: a part), over
    the counts with cameras when there are two."""

    def value(row: dict[str, Any]) -> float:
        if key.startswith("parts/"):
            return float(row["parts"].get(key[6:], 0.0))
        return float(row[key])

    if sum(row["count"] > 0 for row in rows) > 1:  # no camera: no decoder's first use yet
        rows = [row for row in rows if row["count"] > 0]
    xs = [float(row["count"]) for row in rows]
    ys = [value(row) for row in rows]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = (
        sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
        if spread
        else 0.0
    )
    return mean_y - slope * mean_x, slope


def step_table(rows: list[dict[str, Any]]) -> str:
    """One column per camera count, one row per figure and part, with the fitted line."""
    parts = sorted({part for row in rows for part in row["parts"]})
    keys = ["rss_mb", "hwm_mb", "anon_mb", "file_mb", "threads", "arenas"]
    keys += [f"parts/{part}" for part in parts]
    head = "| figure | " + " | ".join(str(row["count"]) for row in rows)
    lines = [head + " | fixed | per camera |", "|---" * (len(rows) + 3) + "|"]
    for key in keys:
        cells = [
            str(row["parts"].get(key[6:], 0.0) if key.startswith("parts/") else row[key])
            for row in rows
        ]
        fixed, slope = fit(rows, key) if len(rows) > 1 else (float("nan"), float("nan"))
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {fixed:.1f} | {slope:.2f} |")
    return "\n".join(lines)
