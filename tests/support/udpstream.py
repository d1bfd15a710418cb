"""A live MPEG-TS stream over UDP whose own clock runs slower than the wall clock.

ffmpeg sends a clip at its real rate (`-re`) but rewrites every timestamp to `clock_rate`
times its value (the `setts` bitstream filter, no re-encoding). A reader that measures its lag
from the stream's clock (edge_facedet/sources/lag.py) then sees every frame arrive later
than the one before by `1 - clock_rate` of the time between them: after a second or so every
due frame is "behind the live stream" and skipped as stale, while the camera keeps streaming.
That is the service's wedge, cameras streaming and nothing reaching the detector, made with
real parts and no signal tricks.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from typing import TYPE_CHECKING

from tests.support.media import FFMPEG

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SlowClockStream:
    """One ffmpeg process sending `clip` to udp://127.0.0.1:`port` with a slowed clock."""

    def __init__(self, *, clip: Path, clock_rate: float) -> None:
        self.port = free_udp_port()
        rate = f"{clock_rate:.6f}"
        self._process = subprocess.Popen(
            [
                FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", str(clip),
                "-an", "-c:v", "copy", "-bsf:v", f"setts=pts=PTS*{rate}:dts=DTS*{rate}",
                "-f", "mpegts", f"udp://127.0.0.1:{self.port}?pkt_size=1316",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=10)


@contextlib.contextmanager
def slow_clock_stream(*, clip: Path, clock_rate: float) -> Iterator[SlowClockStream]:
    """A sending `SlowClockStream`, stopped on exit whatever happened."""
    stream = SlowClockStream(clip=clip, clock_rate=clock_rate)
    try:
        yield stream
    finally:
        stream.stop()
