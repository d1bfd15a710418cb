"""The benchmark's inputs: H.264 clips made from the shared face footage, and RTSP servers.

Owns the clip cache (`results/bench-cache/`, keyed by the parameters): camera-like encodes at
realistic bitrates (720p 3.75 Mbit/s, 1080p 6 Mbit/s, a 640x360 substream 0.8 Mbit/s), long
copies made by remuxing (no re-encode) for the GStreamer server, which plays a clip once. RTSP
servers are `tests.support.rtsp.RtspServer` (the tests' GStreamer server).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.support.media import run_ffmpeg
from tests.support.net import free_port
from tests.support.paths import HIKERS_VIDEO
from tests.support.rtsp import RtspServer

if TYPE_CHECKING:
    from pathlib import Path

FPS = 25
GOP = 50
BASE_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Profile:
    """One camera stream profile."""

    name: str
    width: int
    height: int
    bitrate: str


P720 = Profile("720p", 1280, 720, "3750k")
P1080 = Profile("1080p", 1920, 1080, "6M")
P360 = Profile("360p", 640, 360, "800k")
PROFILES = {p.name: p for p in (P720, P1080, P360)}


class Clips:
    """Makes and caches the benchmark clips under `cache_dir`."""

    def __init__(self, *, cache_dir: Path) -> None:
        self._dir = cache_dir
        cache_dir.mkdir(parents=True, exist_ok=True)

    def base(self, *, profile: Profile) -> Path:
        """`BASE_SECONDS` of the hikers footage at 25 fps, like a camera's encoder makes it."""
        target = self._path(f"base-{profile.name}-{profile.bitrate}-{BASE_SECONDS}", "mp4")
        if not target.exists():
            # -maxrate/-bufsize: a camera's CBR-like rate control rather than x264's free VBR.
            run_ffmpeg(
                "-stream_loop", "-1", "-i", str(HIKERS_VIDEO), "-t", str(BASE_SECONDS), "-an",
                "-vf", f"scale={profile.width}:{profile.height},setsar=1", "-r", str(FPS),
                "-c:v", "libx264", "-preset", "veryfast", "-g", str(GOP), "-bf", "0",
                "-pix_fmt", "yuv420p", "-b:v", profile.bitrate, "-maxrate", profile.bitrate,
                "-bufsize", profile.bitrate, "-movflags", "+faststart",
                output=target,
            )  # fmt: skip
        return target

    def long(self, *, profile: Profile, seconds: float) -> Path:
        """The base clip repeated to at least `seconds` (remuxed: cheap, same bitstream)."""
        seconds = BASE_SECONDS * math.ceil(seconds / BASE_SECONDS)
        if seconds <= BASE_SECONDS:
            return self.base(profile=profile)
        base = self.base(profile=profile)
        target = self._path(f"long-{base.stem}-{seconds}", "mp4")
        if not target.exists():
            loops = int(seconds // BASE_SECONDS) - 1
            run_ffmpeg(
                "-stream_loop", str(loops), "-i", str(base), "-c", "copy",
                "-movflags", "+faststart",
                output=target,
            )  # fmt: skip
        return target

    def _path(self, key: str, suffix: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        return self._dir / f"{key}-{digest}.{suffix}"


def start_rtsp(*, mounts: dict[str, Path]) -> RtspServer:
    """A GStreamer RTSP server (system python) serving each clip once from first connect."""
    return RtspServer(mounts=mounts, port=free_port())
