"""The benchmark's inputs: H.264 clips made from the shared face footage, and RTSP servers.

Owns the clip cache (`results/bench-cache/`, keyed by the parameters): camera-like encodes at
realistic bitrates (720p 3.75 Mbit/s, 1080p 6 Mbit/s, a 640x360 substream 0.8 Mbit/s), long
copies made by remuxing (no re-encode) for the GStreamer server, which plays a clip once. RTSP
servers are `tests.support.rtsp.RtspServer` (the tests' GStreamer server).
"""

from __future__ import annotations

import hashlib
import math
import subprocess
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


SCENE_SECONDS = 60


@dataclass(frozen=True, slots=True, kw_only=True)
class Scene:
    """A fixed camera's minute: an empty stretch of a clip looped, then people from it."""

    source: Path
    empty_s: float
    """The clip's first seconds, with nobody in view."""
    people_from_s: float = 0.0
    people_s: float = 0.0
    """Seconds of people walking through per minute (0: a still scene)."""


def clip_seconds(clip: Path) -> float:
    """A clip's duration as its container states it."""
    return float(_probe(clip, "format=duration"))


def clip_fps(clip: Path) -> float:
    """The frame rate of a clip's first video stream."""
    numerator, _, denominator = _probe(clip, "stream=r_frame_rate", video=True).partition("/")
    return float(numerator) / float(denominator or 1)


def _probe(clip: Path, entry: str, *, video: bool = False) -> str:
    command = ["ffprobe", "-v", "error", "-show_entries", entry, "-of", "csv=p=0"]
    if video:
        command += ["-select_streams", "v:0"]
    done = subprocess.run([*command, str(clip)], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[0]


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

    def substream_of(self, *, clip: Path, profile: Profile = P360) -> Path:
        """`clip` scaled to `profile` and encoded as a camera's substream is (the profile's
        rate, a GOP of two seconds, no B-frames), at the clip's own frame rate so that its
        frames stay one to one with the clip's."""
        target = self._path(f"sub-{clip.stem}-{profile.name}-{profile.bitrate}", "mp4")
        if not target.exists():
            run_ffmpeg(
                "-i", str(clip), "-an", "-fps_mode", "passthrough",
                "-vf", f"scale={profile.width}:{profile.height},setsar=1",
                "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-bf", "0",
                "-pix_fmt", "yuv420p", "-b:v", profile.bitrate, "-maxrate", profile.bitrate,
                "-bufsize", profile.bitrate, "-movflags", "+faststart",
                output=target,
            )  # fmt: skip
        return target

    def scene(self, *, scene: Scene, profile: Profile = P360) -> Path:
        """One minute of a fixed camera: the empty room of `scene.source` looped, then, when
        `scene.people_s` > 0, that many seconds of people walking through; at 25 fps, encoded
        as `profile`."""
        key = (
            f"scene-{scene.source.stem}-{scene.empty_s}-{scene.people_from_s}-{scene.people_s}"
            f"-{profile.name}"
        )
        target = self._path(key, "mp4")
        if target.exists():
            return target
        still_s = SCENE_SECONDS - scene.people_s
        # Looped in the source's own frames (the loop filter counts frames), then to 25 fps.
        rate = clip_fps(scene.source)
        frames = round(scene.empty_s * rate)
        parts = (
            f"[0:v]trim=end_frame={frames},setpts=PTS-STARTPTS,"
            f"loop=loop={math.ceil(still_s / scene.empty_s)}:size={frames}:start=0,"
            f"setpts=N/{rate:g}/TB,fps={FPS},trim=0:{still_s:g},setpts=PTS-STARTPTS[still]"
        )
        if scene.people_s > 0:
            end = scene.people_from_s + scene.people_s
            parts += (
                f";[0:v]trim={scene.people_from_s:g}:{end:g},setpts=PTS-STARTPTS,fps={FPS}"
                "[people];[still][people]concat=n=2:v=1[cycle]"
            )
        else:
            parts = parts.replace("[still]", "[cycle]")
        parts += f";[cycle]scale={profile.width}:{profile.height},setsar=1[out]"
        run_ffmpeg(
            "-i", str(scene.source), "-an", "-filter_complex", parts, "-map", "[out]",
            "-r", str(FPS), "-c:v", "libx264", "-preset", "veryfast", "-g", str(GOP),
            "-bf", "0", "-pix_fmt", "yuv420p", "-b:v", profile.bitrate,
            "-maxrate", profile.bitrate, "-bufsize", profile.bitrate, "-movflags", "+faststart",
            output=target,
        )  # fmt: skip
        return target

    def repeated(self, *, clip: Path, seconds: float, offset_s: float = 0.0) -> Path:
        """`clip` (a GOP-aligned length) repeated to at least `seconds`, starting `offset_s`
        into it (a keyframe: a multiple of the GOP), remuxed without re-encoding; cameras
        given different offsets of one scene do not all see its people at once."""
        length = clip_seconds(clip)
        loops = math.ceil((seconds + offset_s) / length)
        target = self._path(f"rep-{clip.stem}-{loops}-{offset_s:g}", "mp4")
        if not target.exists():
            run_ffmpeg(
                "-stream_loop", str(loops - 1), "-i", str(clip), "-ss", f"{offset_s:g}",
                "-c", "copy", "-movflags", "+faststart",
                output=target,
            )  # fmt: skip
        return target

    def _path(self, key: str, suffix: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        return self._dir / f"{key}-{digest}.{suffix}"


def start_rtsp(*, mounts: dict[str, Path]) -> RtspServer:
    """A GStreamer RTSP server (system python) serving each clip once from first connect."""
    return RtspServer(mounts=mounts, port=free_port())
