"""The bench's RTSP drain (benchmarks/rtsp_drain.py) plays a real mount and reads its stream."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from benchmarks.rtsp_drain import Drains

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.support.media import ClipMaker
    from tests.support.rtsp import RtspServer


def test_drains_play_every_mount_until_the_block_ends(
    h264_clip: ClipMaker, rtsp_server: Callable[..., RtspServer]
) -> None:
    clip = h264_clip.clip(seconds=6)
    server = rtsp_server(mounts={"a": clip, "b": clip})
    size = clip.stat().st_size
    with Drains([server.url("a"), server.url("b")]) as drains:
        time.sleep(3)
    received = drains.received
    # Played live from the first connect: about half the clip each in 3 s (RTP headers add
    # a little). A drain that never played would receive only the RTSP replies.
    assert set(received) == {server.url("a"), server.url("b")}
    for url, count in received.items():
        assert 0.25 * size < count < 1.2 * size, (url, count, size)
