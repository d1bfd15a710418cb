"""Camera source settings as the running service reads them (`edge-facedet run`, real broker).

`detect_url`: the service opens the substream, so the faces payload reports its frame size.
`decoder: pyav` and `skip_loop_filter`: the same clip read by cameras that differ only in
those settings, every frame detected (`realtime: false`), gives identical detections where the
settings are the same and different ones where they differ. That difference is the proof each
setting reached the decoder: nothing else distinguishes the cameras.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from tests.support.broker import mqtt_subscriber
from tests.support.service import faces_of, service_config, states_of

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.support.broker import BrokerAddress
    from tests.support.media import ClipMaker
    from tests.support.rtsp import RtspServer
    from tests.support.service import ServiceProcess


async def test_detect_url_substream_is_what_the_service_reads(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    services: Callable[..., ServiceProcess],
) -> None:
    server = rtsp_server(
        mounts={
            "main": h264_clip.repeated(seconds=10, width=640, height=360),
            "sub": h264_clip.repeated(seconds=10, width=320, height=180),
        }
    )
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=[{"id": "door", "url": server.url("main"), "detect_url": server.url("sub")}],
    )
    async with mqtt_subscriber(f"{prefix}/#", host=mqtt_broker.host, port=mqtt_broker.port) as sub:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)
        await sub.wait_for(lambda m: len(faces_of(m, prefix, "door")) >= 3, timeout=30)
        sizes = {
            (p["frame"]["width"], p["frame"]["height"])
            for p in faces_of(sub.messages, prefix, "door")
        }
        assert sizes == {(320, 180)}, sizes
        # The log names the stream it reads, the substream.
        assert "/sub" in service.log()
        code, _ = await asyncio.to_thread(service.terminate)
        assert code == 0, service.log()


def detections_by_seq(payloads: list[dict[str, Any]]) -> dict[int, Any]:
    """Per frame, the faces without their track ids (which name the camera)."""
    return {
        p["seq"]: [{k: v for k, v in face.items() if k != "track"} for face in p["faces"]]
        for p in payloads
    }


async def test_pyav_decoder_and_skip_loop_filter_reach_the_running_service(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    h264_clip: ClipMaker,
    services: Callable[..., ServiceProcess],
) -> None:
    # x264 deblocks by default, so skipping the loop filter changes the decoded pixels.
    clip = h264_clip.clip(seconds=3, width=640, height=480, fps=10)
    frames = 30
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    # 20 detections/s over 10 fps: every frame is due, and `realtime: false` detects each.
    common = {"url": str(clip), "realtime": False, "detect_fps": 20}
    cameras = [
        {"id": "av", "decoder": "pyav", **common},
        {"id": "av-again", "decoder": "pyav", **common},
        {"id": "av-noloop", "decoder": "pyav", "skip_loop_filter": True, **common},
        {"id": "cv", "decoder": "opencv", **common},
    ]
    ids = [camera["id"] for camera in cameras]
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=cameras,
    )
    async with mqtt_subscriber(f"{prefix}/#", host=mqtt_broker.host, port=mqtt_broker.port) as sub:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)
        await sub.wait_for(
            lambda m: all(len(faces_of(m, prefix, c)) >= frames for c in ids), timeout=60
        )
        code, _ = await asyncio.to_thread(service.terminate)
        assert code == 0, service.log()
    by_camera = {c: detections_by_seq(faces_of(sub.messages, prefix, c)) for c in ids}
    for camera in ids:
        assert sorted(by_camera[camera]) == list(range(frames)), camera
        # Read faster than real time, a 3 s file may go from streaming to stopped before
        # its state is sent (only a camera's latest state waits for the broker).
        assert states_of(sub.messages, prefix, camera)[-1] in {"streaming", "stopped"}, camera
    assert sum(len(faces) for faces in by_camera["av"].values()) >= frames  # faces are seen
    # The control: same settings, same frames, same detections (inference is deterministic).
    assert by_camera["av-again"] == by_camera["av"]
    differing = {
        camera: sum(by_camera[camera][seq] != by_camera["av"][seq] for seq in range(frames))
        for camera in ("av-noloop", "cv")
    }
    # Only a deblocking-free PyAV decode explains the first, only another decoder the second.
    assert differing["av-noloop"] >= 1, differing
    assert differing["cv"] >= 1, differing
    print(f"frames whose detections differ from pyav's full decode: {differing}")
