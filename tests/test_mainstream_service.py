"""Detect on the substream, take the face from the main stream: the service end to end.

Each camera is two RTSP servers started together (a 1280x720 main and a 640x360 sub
rendition of one clip, close enough to one sensor's two encoders for a test), so the main
one can be killed alone. The real service, broker and detector; snapshots land in a
snapshot_dir named by event id, so each JPEG is matched to its event.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest

from tests.support.broker import mqtt_subscriber
from tests.support.media import run_ffmpeg
from tests.support.paths import MEDIA
from tests.support.service import camera_value, poll, service_config

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.support.broker import BrokerAddress, Received
    from tests.support.rtsp import RtspServer
    from tests.support.service import ServiceProcess

CLOSE_UP = MEDIA / "videos" / "openmpf_new_face_video_rotation_baked_640x480.mp4"
MARGIN = 0.4  # the snapshot crop's margin (config default)
# main_stream.view_check_s of the wrong-view camera: the default 10 s, made shorter, cost the
# test 10 s of clip and wait (the rule itself is unit-tested in test_mainstream_decode).
VIEW_CHECK_S = 3.0


def _rendition(
    directory: Path,
    *,
    width: int,
    height: int,
    gop: int,
    bframes: int,
    crop: float = 1.0,
    seconds: int = 14,
) -> Path:
    """`seconds` of the close-up clip at `width`x`height`, 25 fps, `gop` frames per keyframe;
    `crop` < 1 shows only the centre of the view (another field of view)."""
    target = directory / f"close-{width}x{height}-g{gop}-b{bframes}-c{crop}-{seconds}.mp4"
    if target.exists():
        return target
    view = f"crop=iw*{crop}:ih*{crop}," if crop < 1 else ""
    run_ffmpeg(
        "-stream_loop", "-1", "-i", str(CLOSE_UP), "-t", str(seconds), "-an",
        "-vf", f"{view}scale={width}:{height},setsar=1,fps=25",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop), "-keyint_min", str(gop),
        "-sc_threshold", "0", "-bf", str(bframes), "-pix_fmt", "yuv420p",
        "-movflags", "+faststart",
        output=target,
    )  # fmt: skip
    return target


def _events(messages: list[Received], prefix: str, camera: str) -> list[dict[str, Any]]:
    topic = f"{prefix}/cameras/{camera}/events"
    return [json.loads(m.payload) for m in messages if m.topic == topic]


def _with_snapshot(messages: list[Received], prefix: str, camera: str) -> list[dict[str, Any]]:
    return [e for e in _events(messages, prefix, camera) if e["snapshot"]]


def _main_results(service: ServiceProcess, camera: str) -> dict[str, float]:
    samples = service.metrics().get("edge_facedet_snapshots_main_total", {})
    return {
        dict(labels)["result"]: value
        for labels, value in samples.items()
        if dict(labels)["camera"] == camera
    }


def _camera(
    camera_id: str, *, main: str, sub: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": camera_id,
        "url": main,
        "detect_url": sub,
        "snapshots": {"mode": "crop", "max_size_px": 4096},
        "tracking": {"min_hits": 2, "max_age_s": 1.0, "update_interval_s": 0.5},
        **(extra or {}),
    }


async def test_snapshots_come_from_the_main_stream_and_fall_back_when_it_dies(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    rtsp_server: Callable[..., RtspServer],
    services: Callable[..., ServiceProcess],
) -> None:
    clips = tmp_path_factory.mktemp("mainstream-clips")
    # B-frames on here (a reordering decoder), off in the next test.
    main_clip = _rendition(clips, width=1280, height=720, gop=50, bframes=3)
    sub_clip = _rendition(clips, width=640, height=360, gop=50, bframes=3)
    main = rtsp_server(mounts={"main": main_clip})
    sub = rtsp_server(mounts={"sub": sub_clip})
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=[_camera("door", main=main.url("main"), sub=sub.url("sub"))],
    )
    snapshot_dir = tmp_path / "snapshots"
    snapshot_dir.mkdir()
    config["snapshot_dir"] = {"path": str(snapshot_dir), "min_free_bytes": 0}
    async with mqtt_subscriber(f"{prefix}/#", host=mqtt_broker.host, port=mqtt_broker.port) as sub_:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)

        def from_main(messages: list[Received]) -> bool:
            events = _with_snapshot(messages, prefix, "door")
            return sum(e["snapshot_source"] == "main" for e in events) >= 3

        await sub_.wait_for(from_main, timeout=40)
        await poll(
            lambda: _main_results(service, "door").get("main", 0) >= 3,
            timeout=20,
            what="main-stream snapshots rendered",
        )
        main.kill()
        inferred = camera_value(service.metrics(), "edge_facedet_frames_inferred_total", "door")
        before = len(_with_snapshot(list(sub_.messages), prefix, "door"))

        def detect_after_kill(messages: list[Received]) -> bool:
            later = _with_snapshot(messages, prefix, "door")[before:]
            return any(e["snapshot_source"] == "detect" for e in later)

        await sub_.wait_for(detect_after_kill, timeout=30)
        results = _main_results(service, "door")
        assert results["down"] + results["fallback"] >= 1, results
        after = camera_value(service.metrics(), "edge_facedet_frames_inferred_total", "door")
        assert after > inferred, "detection goes on with the main stream dead"
        assert "main stream" in service.log() and "reconnecting" in service.log()
        messages = list(sub_.messages)

    # Resolution: a main-stream crop is about twice the substream crop of the same face.
    ratios = []
    for event in _with_snapshot(messages, prefix, "door"):
        if event["snapshot_source"] != "main":
            continue
        files = list((snapshot_dir / "door").glob(f"*{event['event_id']}.jpg"))
        if not files:
            continue  # still queued for rendering when the service was looked at
        image = cv2.imdecode(np.frombuffer(files[0].read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        sub_crop_height = min(event["best"]["height_px"] * (1 + 2 * MARGIN), 360)
        ratios.append(image.shape[0] / sub_crop_height)
    assert len(ratios) >= 2, ratios
    assert 1.6 <= float(np.median(ratios)) <= 2.5, ratios


async def test_a_long_gop_and_another_view_fall_back_to_the_substream(
    tmp_path_factory: pytest.TempPathFactory,
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    rtsp_server: Callable[..., RtspServer],
    services: Callable[..., ServiceProcess],
) -> None:
    clips = tmp_path_factory.mktemp("mainstream-clips")
    sub_clip = _rendition(clips, width=640, height=360, gop=50, bframes=0)
    # A 10 s GOP against a 2 s buffer; and a main stream that shows the centre only.
    long_gop = _rendition(clips, width=1280, height=720, gop=250, bframes=0)
    # Long enough for VIEW_CHECK_S of pictures that do not match, after the start.
    narrow = _rendition(clips, width=1280, height=720, gop=50, bframes=0, crop=0.6, seconds=24)
    wide = _rendition(clips, width=640, height=360, gop=50, bframes=0, seconds=24)
    gop_main = rtsp_server(mounts={"main": long_gop})
    gop_sub = rtsp_server(mounts={"sub": sub_clip})
    fov_main = rtsp_server(mounts={"main": narrow})
    fov_sub = rtsp_server(mounts={"sub": wide})
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=[
            _camera(
                "gop",
                main=gop_main.url("main"),
                sub=gop_sub.url("sub"),
                extra={"main_stream": {"max_seconds": 2}},
            ),
            _camera(
                "fov",
                main=fov_main.url("main"),
                sub=fov_sub.url("sub"),
                extra={"main_stream": {"view_check_s": VIEW_CHECK_S}},
            ),
        ],
    )
    async with mqtt_subscriber(f"{prefix}/#", host=mqtt_broker.host, port=mqtt_broker.port) as sub_:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)

        def both_snapshotted(messages: list[Received]) -> bool:
            # fov's first events may say "main": its views are undecided until VIEW_CHECK_S
            # of pictures that do not match; their JPEGs come from the substream (below).
            gop = _with_snapshot(messages, prefix, "gop")
            fov = _with_snapshot(messages, prefix, "fov")
            return sum(e["snapshot_source"] == "detect" for e in gop) >= 2 and len(fov) >= 2

        await sub_.wait_for(both_snapshotted, timeout=40)
        gop = _main_results(service, "gop")
        # Refused when asked (the keyframe is gone) or failed when rendered. (Faces within
        # the first seconds of a connection may still find its first keyframe held.)
        assert gop["evicted"] + gop["down"] + gop["fallback"] >= 2, gop
        dropped = service.metrics()["edge_facedet_main_stream_packets_dropped_total"]
        assert dropped[(("camera", "gop"),)] > 0
        # Called another view once the pictures failed to match for VIEW_CHECK_S (a bad
        # start must not decide it); no snapshot was cut from the other view meanwhile.
        warning = "camera fov: the main stream's picture does not match the substream's"
        await poll(lambda: warning in service.log(), timeout=30, what="the view warning")
        fov = _main_results(service, "fov")
        assert fov["fallback"] + fov["fov_mismatch"] >= 2, fov
        assert fov["main"] == 0, fov
        log = service.log()
        assert warning in log
        assert "main_stream.map" in log
