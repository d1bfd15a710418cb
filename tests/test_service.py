"""The whole service, run as a user runs it, against real cameras, a real broker and the model.

Cameras are the shared face videos (looping files) and H.264 streams from the GStreamer
RTSP server; MQTT messages are received by a real subscriber and validated against the
JSON Schemas that ship in the package. Faults (a camera's server or the broker going away
and coming back, bad configuration at `run`) are reproduced in test_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING

import jsonschema
import pytest

from edge_facedet.outputs.payloads import load_schema
from edge_facedet.sources.reader import READER_THREAD_PREFIX
from tests.support.broker import mqtt_subscriber
from tests.support.load import load_slack
from tests.support.paths import FACE_VIDEO, HIKERS_VIDEO, MEDIA
from tests.support.service import (
    ServiceProcess,
    camera_value,
    faces_of,
    service_config,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.support.broker import BrokerAddress
    from tests.support.media import ClipMaker
    from tests.support.rtsp import RtspServer

pytestmark = pytest.mark.slow

TEARS_VIDEO = MEDIA / "videos" / "blender_tears_of_steel_clip01_640x360.mp4"
EVERY_METRIC = [
    "edge_facedet_frames_captured_total",
    "edge_facedet_frames_skipped_total",
    "edge_facedet_frames_dropped_total",
    "edge_facedet_frames_stale_total",
    "edge_facedet_frames_inferred_total",
    "edge_facedet_faces_detected_total",
    "edge_facedet_camera_reconnects_total",
    "edge_facedet_mqtt_published_total",
    "edge_facedet_mqtt_dropped_total",
    "edge_facedet_inference_seconds_bucket",
    "edge_facedet_batch_size_bucket",
    "edge_facedet_pipeline_latency_seconds_bucket",
    "edge_facedet_camera_up",
    "edge_facedet_camera_lag_seconds",
    "edge_facedet_inflight_requests",
    "edge_facedet_mqtt_connected",
    "edge_facedet_build_info",
    "edge_facedet_device_info",
]


async def test_four_cameras_publish_schema_valid_faces_metrics_and_notify(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    services: Callable[..., ServiceProcess],
) -> None:
    server = rtsp_server(mounts={"lobby": h264_clip.repeated(seconds=60)})
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    cameras = [
        {"id": "event", "url": str(FACE_VIDEO), "loop": True},
        {"id": "hikers", "url": str(HIKERS_VIDEO), "loop": True},
        {"id": "film", "url": str(TEARS_VIDEO), "loop": True},
        {"id": "lobby", "url": server.url("lobby")},
    ]
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=cameras,
    )
    faces_schema = load_schema("faces")
    state_schema = load_schema("camera_state")
    async with mqtt_subscriber(f"{prefix}/#", host=mqtt_broker.host, port=mqtt_broker.port) as sub:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)
        ids = [camera["id"] for camera in cameras]
        await sub.wait_for(
            lambda messages: all(len(faces_of(messages, prefix, c)) >= 5 for c in ids),
            timeout=45,
        )
        assert [m.payload for m in sub.on(f"{prefix}/status")][:1] == [b"online"]
        for camera in ids:
            for payload in faces_of(sub.messages, prefix, camera):
                jsonschema.validate(payload, faces_schema)
                assert payload["camera"] == camera
            states = list(sub.on(f"{prefix}/cameras/{camera}/state"))
            assert states, f"no state for {camera}"
            for state in states:
                jsonschema.validate(json.loads(state.payload), state_schema)
        # Faces are found where there are faces.
        event = faces_of(sub.messages, prefix, "event")
        assert max(len(p["faces"]) for p in event) >= 3
        lobby = faces_of(sub.messages, prefix, "lobby")
        assert any(p["faces"] for p in lobby)
        assert {(p["frame"]["width"], p["frame"]["height"]) for p in lobby} == {(1280, 720)}
        seqs = [p["seq"] for p in lobby]
        assert seqs == sorted(seqs)
        all_ids = [p["event_id"] for c in ids for p in faces_of(sub.messages, prefix, c)]
        assert len(all_ids) == len(set(all_ids))

        samples = await asyncio.to_thread(service.metrics)
        missing = [name for name in EVERY_METRIC if name not in samples]
        assert missing == []
        for camera in ids:
            assert camera_value(samples, "edge_facedet_frames_inferred_total", camera) >= 5
            assert camera_value(samples, "edge_facedet_camera_up", camera) == 1
            captured = camera_value(samples, "edge_facedet_frames_captured_total", camera)
            skipped = camera_value(samples, "edge_facedet_frames_skipped_total", camera)
            assert captured > skipped > 0  # 25-30 fps sources read at 5 detections/s
        assert camera_value(samples, "edge_facedet_faces_detected_total", "event") >= 3
        assert samples["edge_facedet_mqtt_connected"][()] == 1
        assert samples["edge_facedet_mqtt_published_total"][()] >= 20
        latency_count = samples["edge_facedet_pipeline_latency_seconds_count"]
        assert latency_count[(("camera", "lobby"),)] >= 5
        device = next(iter(samples["edge_facedet_device_info"]))
        assert ("requested", "AUTO") in device
        status, health = await asyncio.to_thread(service.health)
        assert status == 200 and health["frames_flowing"] is True
        # One named native thread per camera (what `top -H` shows), and no OpenCV worker
        # pool beside them: a pool thread started from a reader would carry its name too.
        names = sorted((await asyncio.to_thread(service.threads)).values())
        readers = [name for name in names if name.startswith(READER_THREAD_PREFIX)]
        assert readers == sorted(f"{READER_THREAD_PREFIX}{camera}" for camera in ids)

        await asyncio.to_thread(service.wait_notification, "WATCHDOG=1", 10)
        # Every stop step is bounded (drain, reader joins, outputs): a few seconds at most,
        # widened with the load but kept well inside the unit's TimeoutStopSec=20.
        code, seconds = await asyncio.to_thread(service.terminate, 15.0)
        logging.getLogger(__name__).info("stopped in %.2f s", seconds)
        assert code == 0, service.log()
        assert seconds < 5 * load_slack(cap=2.0, what="service stop"), seconds
        assert any(n.startswith("STOPPING=1") for n in service.poll_notifications())
        assert any("STATUS=" in n and "cameras streaming" in n for n in service.notifications)
    # A new subscriber sees the retained status of the stopped service.
    async with mqtt_subscriber(
        f"{prefix}/status", host=mqtt_broker.host, port=mqtt_broker.port
    ) as late:
        received = await late.wait_for(bool, timeout=5)
        assert received[0].payload == b"stopped"
        assert received[0].retain
