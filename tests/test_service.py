"""The whole service, run as a user runs it, against real cameras, a real broker and the model.

Cameras are the shared face videos (looping files) and H.264 streams from the GStreamer
RTSP server; MQTT messages are received by a real subscriber and validated against the
JSON Schemas that ship in the package.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from typing import TYPE_CHECKING

import jsonschema
import pytest

from edge_facedet.outputs.payloads import load_schema
from edge_facedet.sources.reader import READER_THREAD_PREFIX
from tests.support.broker import TcpGate, mqtt_subscriber
from tests.support.paths import FACE_VIDEO, HIKERS_VIDEO, MEDIA
from tests.support.service import (
    ServiceProcess,
    camera_value,
    capture_times,
    faces_of,
    run_cli,
    service_config,
    states_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.support.broker import BrokerAddress, MosquittoBroker
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
    server = rtsp_server(mounts={"lobby": h264_clip.clip(seconds=60)})
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
        code, seconds = await asyncio.to_thread(service.terminate)
        assert code == 0, service.log()
        assert seconds < 5
        assert any(n.startswith("STOPPING=1") for n in service.poll_notifications())
        assert any("STATUS=" in n and "cameras streaming" in n for n in service.notifications)
    # A new subscriber sees the retained status of the stopped service.
    async with mqtt_subscriber(
        f"{prefix}/status", host=mqtt_broker.host, port=mqtt_broker.port
    ) as late:
        received = await late.wait_for(bool, timeout=5)
        assert received[0].payload == b"stopped"
        assert received[0].retain


async def test_rtsp_server_restart_reconnects_that_camera_and_others_never_pause(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    services: Callable[..., ServiceProcess],
) -> None:
    server = rtsp_server(mounts={"gate": h264_clip.clip(seconds=60)})
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    cameras = [
        {"id": "gate", "url": server.url("gate")},
        {"id": "event", "url": str(FACE_VIDEO), "loop": True},
    ]
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
        await sub.wait_for(lambda m: len(faces_of(m, prefix, "gate")) >= 5, timeout=30)
        server.kill()
        killed_at = time.time()
        await sub.wait_for(lambda m: "reconnecting" in states_of(m, prefix, "gate"), timeout=15)
        await asyncio.sleep(3)
        server.restart()
        restarted_at = time.time()
        await sub.wait_for(
            lambda m: any(t > restarted_at for t in capture_times(faces_of(m, prefix, "gate"))),
            timeout=30,
        )
        assert states_of(sub.messages, prefix, "gate")[-1] == "streaming"
        samples = await asyncio.to_thread(service.metrics)
        assert camera_value(samples, "edge_facedet_camera_reconnects_total", "gate") >= 1
        # The file camera kept its pace all along: no gap in its capture times.
        event_times = [
            t for t in capture_times(faces_of(sub.messages, prefix, "event")) if t > killed_at - 2
        ]
        assert event_times[-1] > restarted_at
        gaps = [b - a for a, b in itertools.pairwise(event_times)]
        assert max(gaps) < 1.0, f"file camera paused for {max(gaps):.2f} s"
        code, _ = await asyncio.to_thread(service.terminate)
        assert code == 0


async def test_broker_restart_keeps_detecting_and_drains_the_outbox(
    model_root: Path,
    model_cache: Path,
    private_broker: Callable[..., MosquittoBroker],
    services: Callable[..., ServiceProcess],
) -> None:
    broker = private_broker()
    # The service reaches the broker through a gate, so that after the restart the test's
    # subscriber is in place before the service can reconnect and drain its outbox.
    gate = TcpGate(target_host=broker.host, target_port=broker.port)
    await gate.open()
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=gate.port,
        cameras=[{"id": "event", "url": str(FACE_VIDEO), "loop": True}],
    )
    async with mqtt_subscriber(f"{prefix}/#", host=broker.host, port=broker.port) as first:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)
        await first.wait_for(lambda m: len(faces_of(m, prefix, "event")) >= 3, timeout=30)
        broker.kill()
        await gate.close()
        killed_at = time.time()
    before = await asyncio.to_thread(service.metrics)
    await asyncio.sleep(3)
    during = await asyncio.to_thread(service.metrics)
    assert during["edge_facedet_mqtt_connected"][()] == 0
    inferred_before = camera_value(before, "edge_facedet_frames_inferred_total", "event")
    inferred_during = camera_value(during, "edge_facedet_frames_inferred_total", "event")
    assert inferred_during >= inferred_before + 10  # ~5/s for 3 s: detection never stopped
    broker.start()
    async with mqtt_subscriber(f"{prefix}/#", host=broker.host, port=broker.port) as second:
        restarted_at = time.time()
        await gate.open()
        messages = await second.wait_for(
            lambda m: any(t > restarted_at for t in capture_times(faces_of(m, prefix, "event"))),
            timeout=20,
        )
        await second.wait_for(lambda m: bool(m and second.on(f"{prefix}/status")), timeout=10)
        assert second.on(f"{prefix}/status")[-1].payload == b"online"
        await second.wait_for(lambda m: bool(states_of(m, prefix, "event")), timeout=10)
        drained = [
            p
            for p in faces_of(messages, prefix, "event")
            if killed_at < capture_times([p])[0] < restarted_at
        ]
        # Every frame inferred while the broker was away arrives after it returns, in order
        # (the outbox holds 1000; a couple of frames straddle the kill).
        assert len(drained) >= inferred_during - inferred_before - 2
        seqs = [p["seq"] for p in faces_of(messages, prefix, "event")]
        assert seqs == sorted(seqs)
    code, seconds = await asyncio.to_thread(service.terminate)
    assert code == 0
    assert seconds < 5


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("cameras:\n  - id: door\n    url: rtsp://cam/stream\n    detect_fps: -1\n")
    result = run_cli("run", "--config", config, timeout=60)
    assert result.returncode == 2
    assert "detect_fps" in result.stderr and "door" in result.stderr
    assert "Traceback" not in result.stderr
