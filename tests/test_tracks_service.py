"""Face tracks end to end: the service, real RTSP cameras and the real broker.

Three cameras, each its own RTSP server so one can be killed alone:

* `door` plays an empty wall, then people (the event-faces clip), then the wall again: each
  face gets one `new` and, once it is gone for max_age_s, one `end` (lost);
* `hall` shows people until its server is killed: its open tracks end with `camera_down`;
* `desk` shows people until SIGTERM: its open tracks end with `shutdown`, before `stopped`,
  and nothing follows `stopped`.

Snapshots (`crop`) of `door` must be JPEGs in which the detector finds the face again;
every event must match event.schema.json; a faces message's track ids must be the events'.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import cv2
import jsonschema
import numpy as np
import pytest

from edge_facedet.config import CameraConfig
from edge_facedet.frames import Detections, Frame
from edge_facedet.outputs.memory import MemoryOutput
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.outputs.payloads import load_schema
from edge_facedet.outputs.tracks import TrackOutputs
from tests.support.broker import delete_retained, mqtt_subscriber
from tests.support.media import run_ffmpeg
from tests.support.paths import FACE_VIDEO, MEDIA
from tests.support.service import camera_value, faces_of, poll, run_cli, service_config

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.support.broker import BrokerAddress, Received
    from tests.support.rtsp import RtspServer
    from tests.support.service import ServiceProcess


def _clip(
    directory: Path, *, wall_before: float, faces: float, wall_after: float, source: Path
) -> Path:
    """An H.264 MP4 at 640x480, 25 fps: a plain wall, `source` for `faces` s, the wall."""
    target = directory / f"wall{wall_before}-{source.stem}{faces}-wall{wall_after}.mp4"
    if target.exists():
        return target
    wall = "color=c=0x5a6470:s=640x480:r=25,noise=alls=6:allf=t,format=yuv420p"
    graph = (
        f"{wall},trim=duration={wall_before}[a];"
        f"[0:v]scale=640:480,fps=25,format=yuv420p,trim=duration={faces},setpts=PTS-STARTPTS[b];"
        f"{wall},trim=duration={wall_after}[c];"
        "[a][b][c]concat=n=3:v=1:a=0[v]"
    )
    run_ffmpeg(
        "-stream_loop", "-1", "-i", str(source), "-filter_complex", graph, "-map", "[v]",
        "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p",
        "-movflags", "+faststart",
        output=target,
    )  # fmt: skip
    return target


CLOSE_UP_VIDEO = MEDIA / "videos" / "openmpf_new_face_video_rotation_baked_640x480.mp4"


def _events(messages: list[Received], prefix: str, camera: str) -> list[dict[str, Any]]:
    topic = f"{prefix}/cameras/{camera}/events"
    return [json.loads(m.payload) for m in messages if m.topic == topic]


def _kinds(events: list[dict[str, Any]]) -> Counter[tuple[str, str | None]]:
    return Counter((event["type"], event["end_reason"]) for event in events)


def _each_new_ends_once(events: list[dict[str, Any]]) -> None:
    by_id: dict[str, list[str]] = {}
    for event in events:
        by_id.setdefault(event["event_id"], []).append(event["type"])
    for event_id, kinds in by_id.items():
        assert kinds[0] == "new", (event_id, kinds)
        assert kinds[-1] == "end", (event_id, kinds)
        assert kinds.count("new") == 1 and kinds.count("end") == 1, (event_id, kinds)


@pytest.fixture
def tracks_node(mqtt_broker: BrokerAddress) -> Iterator[str]:
    """A fresh node id out of the reach of other test sessions' clean-up, which empties the
    retained topics of every `test-<hex>` node on the shared broker, running or not (its
    empty messages then arrive here, after `stopped` too); its own are deleted here."""
    name = f"tracks-{uuid.uuid4().hex[:10]}"
    yield name
    delete_retained(mqtt_broker, filters=(f"edge-facedet/{name}/#",), settle_s=0.5)


async def test_events_for_entering_leaving_camera_loss_and_shutdown(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    rtsp_server: Callable[..., RtspServer],
    services: Callable[..., ServiceProcess],
    tracks_node: str,
) -> None:
    clips = tmp_path_factory.mktemp("track-clips")
    # Close-ups at the door (faces of 100-200 px, so the crops are worth checking), the
    # event's 4-5 small faces elsewhere.
    door_clip = _clip(clips, wall_before=2, faces=3, wall_after=20, source=CLOSE_UP_VIDEO)
    people = _clip(clips, wall_before=0.5, faces=40, wall_after=0.5, source=FACE_VIDEO)
    door = rtsp_server(mounts={"door": door_clip})
    hall = rtsp_server(mounts={"hall": people})
    desk = rtsp_server(mounts={"desk": people})
    node = tracks_node
    prefix = f"edge-facedet/{node}"
    tracking = {"min_hits": 2, "max_age_s": 1.0}
    # hall's and desk's tracks must still be open at the kill and at SIGTERM: a loaded box
    # pauses a camera's detections for longer than door's short max_age_s, which would end
    # them (lost) and start new ones, still unconfirmed, just then.
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=[
            {"id": "door", "url": door.url("door"), "snapshots": {"mode": "crop"}},
            {"id": "hall", "url": hall.url("hall"), "tracking": {"max_age_s": 5.0}},
            {"id": "desk", "url": desk.url("desk"), "tracking": {"max_age_s": 5.0}},
        ],
    )
    config["defaults"]["tracking"] = tracking
    # Motion gating as shipped (on): the wall before and after the faces is gated, the faces'
    # motion and their open tracks let frames through.
    config["defaults"]["motion"] = {"enabled": True}
    snapshot_dir = tmp_path / "snapshot-files"
    snapshot_dir.mkdir()
    config["snapshot_dir"] = {"path": str(snapshot_dir), "min_free_bytes": 0}
    schema = load_schema("event")
    async with mqtt_subscriber(f"{prefix}/#", host=mqtt_broker.host, port=mqtt_broker.port) as sub:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)

        def door_done(messages: list[Received]) -> bool:
            kinds = _kinds(_events(messages, prefix, "door"))
            return kinds[("new", None)] >= 1 and kinds[("end", "lost")] == kinds[("new", None)]

        def hall_open(messages: list[Received]) -> bool:
            return _kinds(_events(messages, prefix, "hall"))[("new", None)] >= 2

        await sub.wait_for(lambda m: door_done(m) and hall_open(m), timeout=60)
        hall.kill()

        def hall_down(messages: list[Received]) -> bool:
            kinds = _kinds(_events(messages, prefix, "hall"))
            return (
                kinds[("end", "camera_down")] >= 1
                and kinds[("end", "camera_down")] + kinds[("end", "lost")] == kinds[("new", None)]
            )

        await sub.wait_for(hall_down, timeout=30)
        await sub.wait_for(lambda m: _kinds(_events(m, prefix, "desk"))[("new", None)] >= 2, 30)
        stopping = datetime.now(timezone.utc)
        code, _ = await asyncio.to_thread(service.terminate)
        assert code == 0
        await sub.wait_for(
            lambda m: any(x.topic == f"{prefix}/status" and x.payload == b"stopped" for x in m),
            timeout=10,
        )
        await asyncio.sleep(1.0)  # anything the service still sent would arrive by now
        messages = list(sub.messages)

    stopped_at = next(
        i
        for i, m in enumerate(messages)
        if m.topic == f"{prefix}/status" and m.payload == b"stopped"
    )
    assert all(m.topic.endswith("/status") for m in messages[stopped_at + 1 :])

    for camera in ("door", "hall", "desk"):
        events = _events(messages, prefix, camera)
        for event in events:
            jsonschema.validate(event, schema)
            assert event["camera"] == camera
        _each_new_ends_once(events)
    gated = [m for m in messages if m.topic == f"{prefix}/cameras/door/faces"]
    assert gated, "door published faces messages"
    desk_kinds = _kinds(_events(messages, prefix, "desk"))
    assert desk_kinds[("end", "shutdown")] >= 1
    # A track still open at SIGTERM ends as a shutdown, not lost while the cameras stop: a
    # lost track's end_ts (max_age_s after its last sighting) is before the SIGTERM.
    lost_in_stop = [
        event
        for camera in ("door", "hall", "desk")
        for event in _events(messages, prefix, camera)
        if event["end_reason"] == "lost"
        and datetime.fromisoformat(event["end_ts"].replace("Z", "+00:00")) >= stopping
    ]
    assert not lost_in_stop, lost_in_stop
    # The event-faces clip shows 4-5 people: a track per person, not one per frame.
    hall_new = _kinds(_events(messages, prefix, "hall"))[("new", None)]
    assert 2 <= hall_new <= 10, hall_new

    # Per-frame faces carry the confirmed tracks' ids: the same ids the events use.
    event_ids = {
        e["event_id"] for c in ("door", "hall", "desk") for e in _events(messages, prefix, c)
    }
    face_tracks = {
        face["track"]
        for c in ("door", "hall", "desk")
        for payload in faces_of(messages, prefix, c)
        for face in payload["faces"]
        if face["track"] is not None
    }
    assert face_tracks and face_tracks <= event_ids

    # Snapshots: only `door` has them on; each a JPEG in which the detector finds a face.
    # The others' snapshot topics get only the empty retained message that clears a picture
    # an earlier configuration may have left.
    snapshots = [m for m in messages if m.topic.endswith("/snapshot") and m.payload]
    assert snapshots and {m.topic for m in snapshots} == {f"{prefix}/cameras/door/snapshot"}
    cleared = {m.topic for m in messages if m.topic.endswith("/snapshot") and not m.payload}
    assert cleared == {f"{prefix}/cameras/{c}/snapshot" for c in ("hall", "desk")}
    assert any(e["snapshot"] for e in _events(messages, prefix, "door"))
    assert not any(e["snapshot"] for e in _events(messages, prefix, "hall"))
    folder = tmp_path / "snapshots"
    folder.mkdir()
    for index, message in enumerate(snapshots):
        image = cv2.imdecode(np.frombuffer(message.payload, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] >= 32
        (folder / f"{index}.jpg").write_bytes(message.payload)
    detected = run_cli(
        "detect", folder, "--models-dir", model_root, "--device", "CPU", "--threshold", "0.5"
    )
    assert detected.returncode == 0, detected.stderr
    lines = [json.loads(line) for line in detected.stdout.splitlines() if line.strip()]
    assert len(lines) == len(snapshots)
    assert all(line["faces"] for line in lines), lines

    # snapshot_dir: one file per door event that had a snapshot, named by its event id.
    files = sorted(path.name for path in (snapshot_dir / "door").iterdir())
    with_snapshot = {e["event_id"] for e in _events(messages, prefix, "door") if e["snapshot"]}
    assert len(files) == len(with_snapshot)
    assert {name.split("-", 1)[1].removesuffix(".jpg") for name in files} == with_snapshot
    assert not any((snapshot_dir / camera).exists() for camera in ("hall", "desk"))


def test_the_expiry_timer_ends_only_tracks_of_cameras_whose_frames_stopped() -> None:
    # A reader behind its live stream, or a detector with a backlog, hands frames over late:
    # by the wall clock the expiry timer runs on, such a camera's latest frame is always
    # older than max_age_s, yet its face is in every frame.
    memory = MemoryOutput()
    camera = CameraConfig.model_validate(
        {"id": "late", "url": "rtsp://192.0.2.1/s", "tracking": {"min_hits": 1, "max_age_s": 1}}
    )
    tracks = TrackOutputs(
        cameras=[camera],
        id_prefix=lambda camera_id: f"n-{camera_id}-r",
        outputs=[memory],
        metrics=Metrics().tracks,
        snapshots=None,
        on_open_tracks_changed=lambda camera_id: None,
    )
    face = Detections(
        boxes_px=np.array([[200, 100, 300, 220]], np.float32),
        boxes_norm=np.array([[200 / 640, 100 / 480, 300 / 640, 220 / 480]], np.float32),
        confidences=np.array([0.95], np.float32),
    )
    image = np.random.default_rng(1).integers(0, 255, size=(448, 448, 3), dtype=np.uint8)
    lag_s, captured = 3.0, 100.0
    for seq in range(20):  # 4 s of frames at 5/s, each handed over lag_s after its capture
        captured = 100.0 + seq * 0.2
        frame = Frame(
            camera_id="late",
            seq=seq,
            capture_time=datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=captured),
            capture_monotonic=captured,
            width=640,
            height=480,
            image=image,
        )
        tracks.observe(frame=frame, detections=face)
        tracks.expire(now=captured + lag_s)
    kinds = [json.loads(payload)["type"] for payload in memory.events("late")]
    assert kinds.count("new") == 1 and "end" not in kinds, kinds
    # The frames stop: the next tick without one ends the track, as lost.
    tracks.expire(now=captured + lag_s + 1.0)
    tracks.expire(now=captured + lag_s + 2.0)
    ends = [json.loads(p) for p in memory.events("late") if json.loads(p)["type"] == "end"]
    assert [end["end_reason"] for end in ends] == ["lost"], ends


def test_a_missing_or_unwritable_snapshot_dir_is_a_config_error(tmp_path: Path) -> None:
    for path, problem in (
        (tmp_path / "absent", "does not exist"),
        (tmp_path / "a-file", "is not a directory"),
    ):
        if path.name == "a-file":
            path.write_text("")
        config = tmp_path / "config.yaml"
        config.write_text(
            "metrics: {enabled: false}\n"
            f"snapshot_dir: {{path: {path}}}\n"
            "cameras:\n  - {id: door, url: rtsp://192.0.2.1/s, snapshots: {mode: crop}}\n"
        )
        done = run_cli("run", "--config", config, timeout=60)
        assert done.returncode == 2, done.stderr
        assert f"snapshot_dir.path: {path} {problem}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


async def test_a_full_snapshot_disk_is_counted_and_detection_goes_on(
    tmp_path: Path,
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    services: Callable[..., ServiceProcess],
) -> None:
    # A 64 KiB tmpfs: the first crops fit, then every write fails with ENOSPC.
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = await asyncio.to_thread(
        subprocess.run,
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert mounted.returncode == 0, f"the tests run as root and mount a tmpfs: {mounted.stderr}"
    try:
        node = f"test-{uuid.uuid4().hex[:10]}"
        clip = CLOSE_UP_VIDEO
        config = service_config(
            node_id=node,
            model_root=model_root,
            model_cache=model_cache,
            mqtt_port=mqtt_broker.port,
            cameras=[
                {
                    "id": "door",
                    "url": str(clip),
                    "loop": True,
                    "snapshots": {"mode": "frame", "jpeg_quality": 95},
                    "tracking": {"min_hits": 1, "update_interval_s": 0},
                }
            ],
        )
        config["snapshot_dir"] = {"path": str(disk), "min_free_bytes": 0}
        service = services(config)
        await asyncio.to_thread(service.wait_ready)

        def failed_and_flowing() -> tuple[float, float] | None:
            samples = service.metrics()
            failed = samples["edge_facedet_snapshots_total"][
                (("camera", "door"), ("result", "failed"))
            ]
            inferred = camera_value(samples, "edge_facedet_frames_inferred_total", "door")
            return (failed, inferred) if failed >= 2 else None

        _, inferred = await poll(failed_and_flowing, timeout=60, what="snapshot failures")
        later = await poll(
            lambda: (
                v
                if (
                    v := camera_value(
                        service.metrics(), "edge_facedet_frames_inferred_total", "door"
                    )
                )
                > inferred + 10
                else None
            ),
            timeout=30,
            what="detection going on",
        )
        assert later > inferred
        assert "snapshot of" in service.log() and "bytes free" in service.log()
        code, _ = await asyncio.to_thread(service.terminate)
        assert code == 0
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(disk)], check=False)
