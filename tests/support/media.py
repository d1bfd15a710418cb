"""H.264 test clips made with Debian's ffmpeg from the real footage in the shared media folder.

Clips are cached per pytest session, keyed by their parameters, so several tests asking for
"10 s of 720p@25" share one encode. Besides plain clips it makes long streams as copies of a
short clip (`repeated`), and the damaged and unusual files the camera tests need: a truncated
copy, a copy with garbage written over its middle, and a stream whose resolution changes
mid-way.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import subprocess
import threading
from typing import TYPE_CHECKING

from tests.support.paths import FACE_VIDEO

if TYPE_CHECKING:
    from pathlib import Path

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
# The unit `ClipMaker.repeated` copies: one of the short clips the camera tests make anyway.
REPEAT_UNIT_S = 4


class ClipMaker:
    """Makes and caches clips under one directory (a session tmp dir)."""

    def __init__(self, *, cache_dir: Path) -> None:
        self._cache_dir = cache_dir
        cache_dir.mkdir(parents=True, exist_ok=True)

    def clip(
        self,
        *,
        seconds: float,
        width: int = 1280,
        height: int = 720,
        fps: int = 25,
        source: Path = FACE_VIDEO,
        container: str = "mp4",
    ) -> Path:
        """`seconds` of `source`, looped as needed, scaled and re-encoded as H.264."""
        target = self._cached(
            f"clip-{source.stem}-{width}x{height}-{fps}-{seconds}", suffix=container
        )
        if target.exists():
            return target
        # Stream ends in MPEG-TS are byte-concatenable; MP4 gets its index first so an RTSP
        # server or a truncated copy still finds it.
        container_args = ["-movflags", "+faststart"] if container == "mp4" else []
        run_ffmpeg(
            "-stream_loop", "-1", "-i", str(source), "-t", str(seconds), "-an",
            "-vf", f"scale={width}:{height},setsar=1", "-r", str(fps),
            "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p",
            "-b:v", "3M", *container_args,
            output=target,
        )  # fmt: skip
        return target

    def repeated(
        self,
        *,
        seconds: float,
        width: int = 1280,
        height: int = 720,
        fps: int = 25,
        source: Path = FACE_VIDEO,
        unit_s: int = REPEAT_UNIT_S,
    ) -> Path:
        """An MP4 at least `seconds` long: one `unit_s` clip, copied end to end.

        For tests that need a stream to *last* (an RTSP mount plays its clip once), not new
        pictures: the footage is a short loop anyway, and encoding a long clip (upscaled to
        720p at that) was among the suite's slowest steps, while a stream copy is a mux only.
        Every copy starts with a keyframe and the timestamps run on without a jump, so the
        readers see one continuous stream. Not for tests that match frames by their pixels:
        each copy repeats the unit's frames.
        """
        copies = max(1, math.ceil(seconds / unit_s))
        unit = self.clip(seconds=unit_s, width=width, height=height, fps=fps, source=source)
        if copies == 1:
            return unit
        target = self._cached(f"repeated-{unit.stem}-x{copies}", suffix="mp4")
        if target.exists():
            return target
        # Per process: pytest-xdist's workers share the cache, and one rewriting a listing
        # while the other's ffmpeg reads it would cut that clip short.
        listing = self._cache_dir / f".list-{target.stem}-{os.getpid()}.txt"
        listing.write_text(f"file '{unit}'\n" * copies)
        run_ffmpeg(
            "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
            "-movflags", "+faststart",
            output=target,
        )  # fmt: skip
        return target

    def truncated(self, *, clip: Path, keep_fraction: float) -> Path:
        """The first `keep_fraction` of the clip's bytes, as a copy cut off by a full disk."""
        target = self._cached(f"truncated-{clip.stem}-{keep_fraction}", suffix=clip.suffix[1:])
        if not target.exists():
            data = clip.read_bytes()
            _atomic_write(target=target, data=data[: int(len(data) * keep_fraction)])
        return target

    def corrupted(self, *, clip: Path, seed: int = 1) -> Path:
        """The clip with random bytes written over a few spans in its middle (bit rot)."""
        target = self._cached(f"corrupted-{clip.stem}-{seed}", suffix=clip.suffix[1:])
        if not target.exists():
            data = bytearray(clip.read_bytes())
            rng = random.Random(seed)  # noqa: S311 - reproducible damage, not security
            for _ in range(8):
                start = rng.randrange(len(data) // 4, 3 * len(data) // 4)
                data[start : start + 4096] = rng.randbytes(4096)
            _atomic_write(target=target, data=bytes(data))
        return target

    def resolution_change(
        self,
        *,
        seconds_each: float,
        first: tuple[int, int] = (1280, 720),
        second: tuple[int, int] = (640, 480),
        fps: int = 25,
    ) -> Path:
        """One MPEG-TS stream: `first`-sized frames, then `second`-sized ones (new SPS)."""
        target = self._cached(
            f"reschange-{first[0]}x{first[1]}-{second[0]}x{second[1]}-{fps}-{seconds_each}",
            suffix="ts",
        )
        if target.exists():
            return target
        parts = [
            self.clip(seconds=seconds_each, width=w, height=h, fps=fps, container="ts")
            for w, h in (first, second)
        ]
        # A byte-level concat of TS segments is what a broadcast encoder switching modes sends;
        # -c copy keeps both SPS so the decoder must handle the switch itself.
        run_ffmpeg("-i", "concat:" + "|".join(str(p) for p in parts), "-c", "copy", output=target)
        return target

    def _cached(self, key: str, *, suffix: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self._cache_dir / f"{key}-{digest}.{suffix}"


def run_ffmpeg(*args: str, output: Path) -> None:
    """Run ffmpeg writing `output` atomically (also used by benchmarks/media.py)."""
    # Write beside the target and rename, so an interrupted encode is never taken as cached.
    partial = _partial(output)
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args, str(partial)],
        check=True,
        # Test clips take seconds; the soak's half-hour clips take minutes on 2 cores.
        timeout=1800,
    )
    partial.replace(output)


def _partial(target: Path) -> Path:
    """A scratch name beside `target` of this process and thread only: pytest-xdist's workers
    share the clip cache and may make the same clip at once; with one scratch name, one's
    rename took the file from under the other's (FileNotFoundError) while its encoder was
    still writing, and a test read a broken clip."""
    return target.with_name(f".partial-{os.getpid()}-{threading.get_ident()}-{target.name}")


def _atomic_write(*, target: Path, data: bytes) -> None:
    partial = _partial(target)
    partial.write_bytes(data)
    partial.replace(target)
