"""Field faults, each reproduced against the whole service (`edge-facedet run` in a subprocess).

Real components throughout: Mosquitto brokers we kill and restart, the GStreamer RTSP server
killed or frozen with SIGSTOP, sockets that accept and never answer, damaged H.264 files, the
OpenVINO model on the CPU. Unless a test says otherwise the service must keep running, and
what a fault touches must stay confined to the camera (or the broker link) it hit.

Waits are bounded and generous (these tests share two cores with other test runs); the
assertions are about behaviour, never about speed, except the throughput ratio of
`test_broken_cameras_do_not_slow_the_healthy_ones`, which is what that test is for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from benchmarks.procmem import cpu_s
from edge_facedet.outputs.mqtt.delivery import IN_FLIGHT_MAX
from tests.support.broker import TcpGate, mqtt_subscriber
from tests.support.load import overload_factor
from tests.support.net import free_port
from tests.support.paths import FACE_VIDEO, HIKERS_VIDEO, MEDIA
from tests.support.service import (
    ServiceProcess,
    camera_value,
    capture_times,
    faces_of,
    new_node,
    poll,
    run_cli,
    service_config,
    states_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.support.broker import MosquittoBroker, Received
    from tests.support.media import ClipMaker
    from tests.support.rtsp import RtspServer

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]

TEARS_VIDEO = MEDIA / "videos" / "blender_tears_of_steel_clip01_640x360.mp4"
ROTATED_VIDEO = MEDIA / "videos" / "openmpf_new_face_video_rotation_baked_640x480.mp4"
SHARED_VIDEOS = (FACE_VIDEO, HIKERS_VIDEO, TEARS_VIDEO, ROTATED_VIDEO)
# Short camera timeouts keep each fault's detection within a few seconds.
QUICK_CAMERA = {
    "open_timeout_s": 2,
    "read_timeout_s": 2,
    "stall_timeout_s": 2,
    "reconnect_initial_s": 0.2,
    "reconnect_max_s": 1.0,
}


def make_config(
    *,
    model_root: Path,
    model_cache: Path,
    mqtt_port: int,
    cameras: list[dict[str, Any]],
    node: str,
    detect_fps: float = 5,
    model: dict[str, Any] | None = None,
    mqtt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_port,
        cameras=cameras,
    )
    config["defaults"].update(QUICK_CAMERA, detect_fps=detect_fps)
    config["model"].update(model or {})
    config["mqtt"].update(mqtt or {})
    return config


def per_camera(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["camera"]: value for labels, value in samples.get(name, {}).items()}


def last_state(messages: list[Received], prefix: str, camera: str) -> dict[str, Any] | None:
    topic = f"{prefix}/cameras/{camera}/state"
    found = [json.loads(m.payload) for m in messages if m.topic == topic]
    return found[-1] if found else None


def p99_upper_bound(samples: Samples, name: str) -> float:
    """Upper bound of the 99th percentile of a (per-camera) histogram, summed over cameras."""
    buckets: dict[float, float] = {}
    for labels, value in samples[f"{name}_bucket"].items():
        bound = float(dict(labels)["le"])
        buckets[bound] = buckets.get(bound, 0.0) + value
    total = buckets[float("inf")]
    assert total > 0
    return next(bound for bound in sorted(buckets) if buckets[bound] >= 0.99 * total)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:  # noqa: PTH123 - a /proc read, not a path API
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def assert_frames_accounted(samples: Samples, cameras: list[str], *, slack: int) -> None:
    """captured == skipped + stale + gated + inferred + dropped per camera (the README's
    invariant), within `slack` in flight."""
    counts = {
        name: per_camera(samples, f"edge_facedet_frames_{name}_total")
        for name in ("captured", "skipped", "stale", "gated", "inferred", "dropped")
    }
    for camera in cameras:
        # Every counter is there for every camera; gated only once a camera's gate is made.
        parts = {name: values[camera] for name, values in counts.items() if name != "gated"}
        parts["gated"] = counts["gated"].get(camera, 0.0)
        captured = parts.pop("captured")
        assert abs(captured - sum(parts.values())) <= slack, f"{camera}: {captured} != {parts}"


# ------------------------------------------------------------------------------------------
# 1. Broker killed mid-stream


async def test_broker_killed_mid_stream_reconnects_drains_in_order_and_counts_every_frame(
    model_root: Path,
    model_cache: Path,
    private_broker: Callable[..., MosquittoBroker],
    h264_clip: ClipMaker,
    services: Callable[..., ServiceProcess],
) -> None:
    broker = private_broker()
    # The service reaches the broker only through the gate, so the second subscriber is
    # in place before the service can reconnect and drain its outbox.
    gate = TcpGate(target_host=broker.host, target_port=broker.port)
    await gate.open()
    node, prefix = new_node()
    # Files without `loop` end: after that every counter is final and the accounting can be
    # checked exactly. 25 fps clips read at 20/s give skips; five cameras (100 frames/s) on
    # one infer request of FP16 with one inference thread (about 60/s on an idle core of
    # this machine) give drops, on a quiet machine as well as a loaded one. The clip outlasts
    # the outage; the test waits for its end, so a longer one only waits. 16 s was too short
    # on a host whose one inference takes 90 ms, beside another test (a parallel run): the
    # files ended before every camera had OUTAGE_FRAMES frames inferred in the outage.
    clip = h264_clip.repeated(seconds=28, width=640, height=480)
    cameras = ["a", "b", "c", "d", "e"]
    config = make_config(
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=gate.port,
        node=node,
        detect_fps=20,
        cameras=[{"id": camera, "url": str(clip)} for camera in cameras],
        model={
            "precision": "FP16",
            "performance_hint": "LATENCY",
            "infer_requests": 1,
            "inference_threads": 1,
        },
    )
    async with mqtt_subscriber(f"{prefix}/#", host=broker.host, port=broker.port) as first:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)
        await first.wait_for(
            lambda m: all(len(faces_of(m, prefix, c)) >= 3 for c in cameras), timeout=30
        )
        broker.kill()
        await gate.close()
        killed_at = time.time()
    at_kill = await asyncio.to_thread(service.metrics)
    await asyncio.sleep(2)
    before = await asyncio.to_thread(service.metrics)
    # The broker stays down 4 s at least, and until every camera has had OUTAGE_FRAMES frames
    # inferred since the kill (a loaded machine infers slower): their messages wait in the
    # outbox, and at least 10 of each camera's must arrive after the reconnect.
    during = await poll(
        lambda: _outage_done(
            service.metrics(), at_kill=at_kill, cameras=cameras, killed_at=killed_at
        ),
        timeout=40,
        what=f"{OUTAGE_FRAMES} frames inferred per camera while the broker is down",
    )
    assert during["edge_facedet_mqtt_connected"][()] == 0
    for camera in cameras:
        assert camera_value(during, "edge_facedet_frames_inferred_total", camera) > camera_value(
            before, "edge_facedet_frames_inferred_total", camera
        ), "detection must go on while the broker is down"
    broker.start()
    async with mqtt_subscriber(f"{prefix}/#", host=broker.host, port=broker.port) as second:
        await gate.open()
        reconnected_at = time.time()
        await second.wait_for(lambda m: any(x.payload == b"online" for x in m), timeout=20)
        # The files end; their `stopped` states are the last thing each camera publishes.
        await second.wait_for(
            lambda m: all("stopped" in states_of(m, prefix, c) for c in cameras), timeout=60
        )

        async def quiet() -> Samples:
            # Counters are final once nothing is in flight and two reads a second apart agree.
            previous: Samples | None = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                samples = await asyncio.to_thread(service.metrics)
                if (
                    previous is not None
                    and samples["edge_facedet_inflight_requests"][()] == 0
                    and per_camera(samples, "edge_facedet_frames_inferred_total")
                    == per_camera(previous, "edge_facedet_frames_inferred_total")
                ):
                    return samples
                previous = samples
                await asyncio.sleep(1)
            raise AssertionError("counters never settled")

        final = await quiet()
        # Every faces message is published: wait until the outbox is drained.
        inferred = per_camera(final, "edge_facedet_frames_inferred_total")
        await second.wait_for(
            lambda m: all(
                len({p["event_id"] for p in faces_of(first.messages + m, prefix, c)})
                >= inferred[c] - 3
                for c in cameras
            ),
            timeout=30,
        )
        online = list(second.on(f"{prefix}/status"))
        assert online and online[0].payload == b"online"

    assert final["edge_facedet_mqtt_dropped_total"][()] == 0
    all_messages = first.messages + second.messages
    event_ids = [p["event_id"] for c in cameras for p in faces_of(all_messages, prefix, c)]
    duplicates = len(event_ids) - len(set(event_ids))
    # At most the window of unacknowledged messages at the kill is sent again.
    assert duplicates <= IN_FLIGHT_MAX, f"{duplicates} duplicate event ids"
    for camera in cameras:
        payloads = faces_of(all_messages, prefix, camera)
        seen: set[str] = set()
        seqs = []
        for payload in payloads:
            if payload["event_id"] not in seen:
                seen.add(payload["event_id"])
                seqs.append(payload["seq"])
        assert seqs == sorted(seqs), f"{camera}: out of order after the outbox drain"
        # At most the few messages the broker had acknowledged but not yet forwarded when it
        # was killed are lost; everything else queued while it was down arrives.
        assert len(seen) >= inferred[camera] - 3, (camera, len(seen), inferred[camera])
        drained = [t for t in capture_times(payloads) if killed_at < t < reconnected_at]
        assert len(drained) >= 10, f"{camera}: only {len(drained)} messages from the outage"
    assert sum(per_camera(final, "edge_facedet_frames_dropped_total").values()) > 0, (
        "the scenario must exercise drops"
    )
    assert sum(per_camera(final, "edge_facedet_frames_skipped_total").values()) > 0
    assert_frames_accounted(final, cameras, slack=0)
    code, seconds = await asyncio.to_thread(service.terminate)
    assert code == 0
    assert seconds < 5


OUTAGE_FRAMES = 15


def _outage_done(
    samples: Samples, *, at_kill: Samples, cameras: list[str], killed_at: float
) -> Samples | None:
    """`samples` once the outage has lasted long enough, else None."""
    if time.time() - killed_at < 4:
        return None
    name = "edge_facedet_frames_inferred_total"
    since = {c: camera_value(samples, name, c) - camera_value(at_kill, name, c) for c in cameras}
    return samples if all(count >= OUTAGE_FRAMES for count in since.values()) else None


# ------------------------------------------------------------------------------------------
# 2. Broker unreachable at start-up


async def test_broker_down_at_start_service_detects_then_connects(
    model_root: Path,
    model_cache: Path,
    private_broker: Callable[..., MosquittoBroker],
    services: Callable[..., ServiceProcess],
) -> None:
    broker = private_broker(start=False)
    node, prefix = new_node()
    config = make_config(
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=broker.port,
        node=node,
        cameras=[{"id": "event", "url": str(FACE_VIDEO), "loop": True}],
    )
    service = services(config)
    await asyncio.to_thread(service.wait_ready)
    first = await asyncio.to_thread(service.metrics)
    await poll(
        lambda: (
            camera_value(service.metrics(), "edge_facedet_frames_inferred_total", "event")
            > camera_value(first, "edge_facedet_frames_inferred_total", "event") + 5
        ),
        timeout=30,
        what="frames inferred without a broker",
    )
    assert (await asyncio.to_thread(service.metrics))["edge_facedet_mqtt_connected"][()] == 0
    # Several refused attempts by now, one line: a cause repeats in the log once per 5 min.
    assert service.log().count("refused the TCP connection") == 1, service.log()
    broker.start()
    await poll(
        lambda: service.metrics()["edge_facedet_mqtt_connected"][()] == 1,
        timeout=30,
        what="connected once the broker is up",
    )
    # `online` follows the first connect's manifest read (up to a second): wait for it, then
    # a new subscriber must get it as the retained status.
    async with mqtt_subscriber(f"{prefix}/status", host=broker.host, port=broker.port) as sub:
        received = await sub.wait_for(lambda m: any(x.payload == b"online" for x in m), 10)
    async with mqtt_subscriber(f"{prefix}/status", host=broker.host, port=broker.port) as sub:
        received = await sub.wait_for(bool, timeout=10)
        assert received[0].payload == b"online"
        assert received[0].retain
    assert "MQTT connected to" in service.log()
    code, _ = await asyncio.to_thread(service.terminate)
    assert code == 0


# ------------------------------------------------------------------------------------------
# 3. Broker refuses the client


def connack_refusals(broker_log: str) -> int:
    """Connection attempts the broker refused as not authorised (Mosquitto's log).

    Mosquitto names a refused client by its address, not its client id; only one service
    in the test is refused.
    """
    return len(re.findall(r"Sending CONNACK to \S+ \(0, 135\)", broker_log))


async def test_broker_refuses_bad_password_and_acl_denial_is_reported_once(
    model_root: Path,
    model_cache: Path,
    private_broker: Callable[..., MosquittoBroker],
    tmp_path: Path,
    services: Callable[..., ServiceProcess],
) -> None:
    good = f"MqttGood-{uuid.uuid4().hex}"
    wrong = f"MqttWrong-{uuid.uuid4().hex}"
    refused_node, _ = new_node()
    denied_node, denied_prefix = new_node()
    acl = (
        "user svc\n"
        f"topic write {denied_prefix}/status\n"
        f"topic write {denied_prefix}/cameras/+/state\n"
        "user viewer\n"
        "topic read #\n"
    )
    viewer = f"Viewer-{uuid.uuid4().hex}"
    broker = private_broker(users={"svc": good, "viewer": viewer}, acl=acl)
    (tmp_path / "wrong.pass").write_text(wrong + "\n")
    (tmp_path / "good.pass").write_text(good + "\n")
    backoff = {"username": "svc", "reconnect_initial_s": 0.5, "reconnect_max_s": 2.0}
    camera = [{"id": "event", "url": str(FACE_VIDEO), "loop": True}]
    common = {
        "model_root": model_root,
        "model_cache": model_cache,
        "mqtt_port": broker.port,
        "cameras": camera,
    }
    refused = services(
        make_config(
            node=refused_node,
            mqtt={**backoff, "password": {"file": str(tmp_path / "wrong.pass")}},
            **common,
        )
    )
    denied = services(
        make_config(
            node=denied_node,
            mqtt={**backoff, "password": {"file": str(tmp_path / "good.pass")}},
            **common,
        )
    )
    async with mqtt_subscriber(
        f"{denied_prefix}/#",
        host=broker.host,
        port=broker.port,
        username="viewer",
        password=viewer,
    ) as sub:
        await asyncio.to_thread(refused.wait_ready)
        await asyncio.to_thread(denied.wait_ready)
        await sub.wait_for(
            lambda m: (
                any(x.payload == b"online" for x in m)
                and bool(states_of(m, denied_prefix, "event"))
            ),
            timeout=20,
        )
        # Retries back off: count the refused attempts in a 3 s window. Delays are drawn
        # from [0, 2 s], so the window holds at least one and about three; ten would need
        # ten draws averaging under 0.3 s, and a retry loop without backoff makes hundreds.
        start_count = connack_refusals(broker.log())
        await asyncio.sleep(3)
        attempts = connack_refusals(broker.log()) - start_count
        assert 1 <= attempts <= 10, f"{attempts} connection attempts in 3 s"
        refused_metrics = await asyncio.to_thread(refused.metrics)
        denied_metrics = await asyncio.to_thread(denied.metrics)
        assert not faces_of(sub.messages, denied_prefix, "event"), "ACL should deny faces"

    assert refused.process is not None and refused.process.poll() is None
    assert refused_metrics["edge_facedet_mqtt_connected"][()] == 0
    assert camera_value(refused_metrics, "edge_facedet_frames_inferred_total", "event") > 0
    log = refused.log()
    refusal_lines = [line for line in log.splitlines() if "refused the connection" in line]
    assert len(refusal_lines) == 1, refusal_lines
    assert "not authori" in refusal_lines[0].lower() or "password" in refusal_lines[0].lower()
    assert "'svc'" in refusal_lines[0]
    assert wrong not in log and good not in log
    assert "Traceback" not in log

    assert denied_metrics["edge_facedet_mqtt_connected"][()] == 1
    denied_log = denied.log()
    rejections = [line for line in denied_log.splitlines() if "rejected a publish" in line]
    # Once per denied topic (faces, events, the snapshot clearing, the manifest, ...), not
    # once per message: the faces alone were hundreds of messages by now.
    topics = [line.split("a publish to ", 1)[1].split(":", 1)[0] for line in rejections]
    assert len(topics) == len(set(topics)), rejections
    assert f"{denied_prefix}/cameras/event/faces" in topics
    assert all("ACL" in line for line in rejections)
    assert good not in denied_log
    for service in (refused, denied):
        code, _ = await asyncio.to_thread(service.terminate)
        assert code == 0


# ------------------------------------------------------------------------------------------
# 4. Camera faults, all in one service run beside a healthy camera


async def test_camera_faults_stay_with_their_camera(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: Any,
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    blackhole: int,
    services: Callable[..., ServiceProcess],
) -> None:
    # 640x480 and 2 detections/s for the faulty cameras: the machine is shared, and a
    # detector starved of CPU by decoding would pause every camera, the healthy one too,
    # which is overload, not the fault isolation this test is about.
    live = h264_clip.repeated(seconds=60, width=640, height=480)
    killed_server = rtsp_server(mounts={"gate": live})
    stalled_server = rtsp_server(mounts={"hall": live})
    short = h264_clip.clip(seconds=4, width=640, height=480)
    longer = h264_clip.repeated(seconds=8, width=640, height=480)
    resolution_change = h264_clip.resolution_change(
        seconds_each=3, first=(640, 480), second=(320, 240)
    )
    node, prefix = new_node()
    cameras = [
        {"id": "steady", "url": str(FACE_VIDEO), "loop": True, "detect_fps": 5},
        {"id": "killed", "url": killed_server.url("gate")},
        {"id": "stalled", "url": stalled_server.url("hall")},
        {"id": "blackhole", "url": f"rtsp://127.0.0.1:{blackhole}/stream", "open_timeout_s": 4},
        {"id": "ends", "url": str(short)},
        {"id": "truncated", "url": str(h264_clip.truncated(clip=longer, keep_fraction=0.5))},
        {"id": "corrupt", "url": str(h264_clip.corrupted(clip=longer)), "loop": True},
        # Read losslessly (every due frame waits for the detector): played in real time, a
        # detector shared with seven cameras and another test's load dropped all but 6 of
        # its 12 due frames, so whether both halves went through depended on the load.
        {"id": "reschange", "url": str(resolution_change), "realtime": False},
    ]
    config = make_config(
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        node=node,
        detect_fps=2,
        cameras=cameras,
    )
    async with mqtt_subscriber(f"{prefix}/#", host=mqtt_broker.host, port=mqtt_broker.port) as sub:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)
        await sub.wait_for(
            lambda m: (
                all(len(faces_of(m, prefix, c)) >= 3 for c in ("steady", "killed", "stalled"))
                and all(
                    "stopped" in states_of(m, prefix, c) for c in ("ends", "truncated", "reschange")
                )
                and "reconnecting" in states_of(m, prefix, "blackhole")
            ),
            timeout=45,
        )
        faults_at = time.time()
        killed_server.kill()
        stalled_server.pause()
        await sub.wait_for(
            lambda m: (
                "reconnecting" in states_of(m, prefix, "killed")
                and "reconnecting" in states_of(m, prefix, "stalled")
            ),
            timeout=20,
        )
        noticed_s = time.time() - faults_at
        stalled_state = last_state(sub.messages, prefix, "stalled")
        assert stalled_state is not None and stalled_state["state"] == "reconnecting"
        assert stalled_state["last_error"].startswith(
            ("read failed on rtsp://", "stalled: no frame from rtsp://")
        ), stalled_state
        # Within the 2 s read timeout and a margin (the state also crosses the event loop
        # and the broker), not through some later timeout: OpenCV's default is 30 s.
        noticed_bar = QUICK_CAMERA["read_timeout_s"] + min(6.0, 3.0 * overload_factor())
        assert noticed_s < noticed_bar, f"stall noticed after {noticed_s:.1f} s"
        await asyncio.sleep(2)
        killed_server.start()
        stalled_server.resume()
        lifted_at = time.time()
        await sub.wait_for(
            lambda m: all(
                any(t > lifted_at for t in capture_times(faces_of(m, prefix, c)))
                for c in ("killed", "stalled")
            ),
            timeout=40,
        )
        await asyncio.sleep(2)
        samples = await asyncio.to_thread(service.metrics)
        status, health = await asyncio.to_thread(service.health)
        # What the topics said while running; SIGTERM then turns every state to `stopped`.
        messages = list(sub.messages)
        overload = overload_factor()
        code, seconds = await asyncio.to_thread(service.terminate)

    # The healthy camera never paused while the others failed and recovered.
    steady_times = [t for t in capture_times(faces_of(messages, prefix, "steady")) if t > faults_at]
    assert steady_times[-1] > lifted_at
    gaps = [b - a for a, b in itertools.pairwise(steady_times)]
    where = [
        (round(a - faults_at, 1), round(b - a, 2))
        for a, b in itertools.pairwise(capture_times(faces_of(messages, prefix, "steady")))
        if b - a > 0.5
    ]
    # 1 s on a machine that is not overloaded; at most 2.5 s on one that is, still well
    # below the 4 s open timeout of the blackhole camera, which is how long every other
    # camera's (re)open waited behind it before the fix.
    bar = min(2.5, 1.0 * overload)
    assert max(gaps) < bar, (
        f"healthy camera paused {max(gaps):.2f} s (bar {bar:.1f} s); gaps (s after the "
        f"faults, length): {where}; faults lifted {lifted_at - faults_at:.1f} s after"
    )
    assert set(states_of(messages, prefix, "steady")) <= {"starting", "streaming", "stopped"}
    # Killed and stalled streams came back, each having said so in its own state topic.
    for camera in ("killed", "stalled"):
        states = states_of(messages, prefix, camera)
        assert "reconnecting" in states
        assert states[states.index("reconnecting") :].count("streaming") >= 1
        assert camera_value(samples, "edge_facedet_camera_reconnects_total", camera) >= 1
    # A URL that never answers: reconnecting, never streaming, the reason named.
    blackhole_states = states_of(messages, prefix, "blackhole")
    assert "streaming" not in blackhole_states
    blackhole_state = last_state(messages, prefix, "blackhole")
    assert blackhole_state is not None
    assert blackhole_state["state"] == "reconnecting"
    assert "cannot open" in blackhole_state["last_error"]
    assert camera_value(samples, "edge_facedet_camera_up", "blackhole") == 0
    # Files without `loop` end as `stopped`, a truncated one after its readable part: the
    # state does not tell a truncated file from a complete one (no last_error).
    for camera in ("ends", "truncated", "reschange"):
        state = last_state(messages, prefix, camera)
        assert state is not None and state["state"] == "stopped", (camera, state)
        assert camera_value(samples, "edge_facedet_frames_inferred_total", camera) > 0
    assert camera_value(samples, "edge_facedet_camera_reconnects_total", "truncated") == 0
    # Damaged packets are skipped without a reconnect; the looping file keeps streaming.
    assert "reconnecting" not in states_of(messages, prefix, "corrupt")
    assert len(faces_of(messages, prefix, "corrupt")) >= 6
    # Reader limitation: OpenCV scales every frame to the size found at open, so a stream
    # that changes resolution keeps reporting the first size until it is reopened.
    sizes = {
        (p["frame"]["width"], p["frame"]["height"]) for p in faces_of(messages, prefix, "reschange")
    }
    assert sizes == {(640, 480)}
    reschange_inferred = camera_value(samples, "edge_facedet_frames_inferred_total", "reschange")
    assert reschange_inferred > 2 * 3.5  # frames from both halves went through at 2/s
    assert status == 200 and health["frames_flowing"] is True
    assert code == 0 and seconds < 5
    assert "Traceback" not in service.log()


# ------------------------------------------------------------------------------------------
# 5. Broken cameras must not cost the healthy ones throughput

WARM_FRAMES = 3


def _warmed_up(*, service: ServiceProcess, healthy: list[str], broken: list[str]) -> None:
    """Until every healthy camera has had frames inferred (the infer requests' one-off set-up
    is behind them) and every broken camera has failed once (it is in its reconnect loop).

    The same rule for both configurations, so neither is measured earlier in its run.
    """
    deadline = time.monotonic() + 60
    while True:
        samples = service.metrics()
        inferred = per_camera(samples, "edge_facedet_frames_inferred_total")
        reconnects = per_camera(samples, "edge_facedet_camera_reconnects_total")
        if all(inferred.get(c, 0) >= WARM_FRAMES for c in healthy) and all(
            reconnects.get(c, 0) >= 1 for c in broken
        ):
            return
        assert time.monotonic() < deadline, f"no warm-up in 60 s: {inferred}, {reconnects}"
        time.sleep(0.2)


CPU_BAR = 0.9
THROUGHPUT_BAR = 0.7
"""Wider than CPU_BAR: throughput follows the CPU the box gives each run (see the test)."""


@dataclass(frozen=True)
class _Rate:
    per_s: float
    """Healthy cameras' inferences per second."""
    per_cpu_s: float
    """The same per CPU-second of the whole service (every thread, broken cameras' too)."""


def _inference_rate(
    *,
    services: Callable[..., ServiceProcess],
    config: dict[str, Any],
    healthy: list[str],
    window_s: float,
) -> _Rate:
    service = services(config)
    try:
        service.wait_ready()
        assert service.process is not None
        pid = service.process.pid
        healthy_ids = set(healthy)
        broken = [c["id"] for c in config["cameras"] if c["id"] not in healthy_ids]
        _warmed_up(service=service, healthy=healthy, broken=broken)
        start = per_camera(service.metrics(), "edge_facedet_frames_inferred_total")
        started, cpu_before = time.monotonic(), cpu_s(pid)[0]
        time.sleep(window_s)
        end = per_camera(service.metrics(), "edge_facedet_frames_inferred_total")
        elapsed, cpu = time.monotonic() - started, cpu_s(pid)[0] - cpu_before
        assert all(end[c] > start[c] for c in healthy), "every healthy camera infers"
        inferred = sum(end[c] - start[c] for c in healthy)
        return _Rate(per_s=inferred / elapsed, per_cpu_s=inferred / cpu)
    finally:
        service.terminate()


@pytest.mark.slow
@pytest.mark.alone  # a throughput ratio
def test_broken_cameras_do_not_slow_the_healthy_ones(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: Any,
    blackhole: int,
    tmp_path: Path,
    services: Callable[..., ServiceProcess],
) -> None:
    # Healthy: eight looping files read at 25/s each (200 frames/s asked of a detector that
    # does far fewer on two cores), so inference is the bottleneck and any CPU the broken
    # cameras burn shows up as lost throughput. Files, not RTSP, so the healthy load is
    # identical between the runs.
    healthy = [
        {"id": f"ok{index}", "url": str(SHARED_VIDEOS[index % 4]), "loop": True}
        for index in range(8)
    ]
    closed_port = free_port()
    broken = (
        [{"id": f"bh{i}", "url": f"rtsp://127.0.0.1:{blackhole}/s{i}"} for i in range(3)]
        + [{"id": f"closed{i}", "url": f"rtsp://127.0.0.1:{closed_port}/s{i}"} for i in range(3)]
        + [{"id": f"missing{i}", "url": str(tmp_path / f"missing{i}.mp4")} for i in range(2)]
    )
    ids = [camera["id"] for camera in healthy]

    def config(cameras: list[dict[str, Any]]) -> dict[str, Any]:
        return make_config(
            model_root=model_root,
            model_cache=model_cache,
            mqtt_port=mqtt_broker.port,
            node=new_node()[0],
            detect_fps=25,
            cameras=cameras,
        )

    # Two measures, crowded against alone. Inferences per CPU-second of the service: a broken
    # camera that costs CPU (a reconnect loop that spins, log or state spam) lowers it by the
    # share it takes, and within an hour it hardly moves with how much CPU the box gives the
    # service (8 quiet runs on 2026-12-06 08:00: 32.7-36.3 per CPU-second, while per second
    # 36-70 and CPU 1.56-1.94 cores; at 09:08 the shared host gave 61-66, so only ratios
    # of interleaved runs are compared). Inferences per second, with a wider bar: a broken
    # camera that blocks what the healthy ones need (a lock, the event loop) takes no CPU
    # but costs throughput. Pairs are interleaved (alone, crowded) so a drift hits both; a
    # ratio below its bar is measured again, two more pairs, and judged by the medians of
    # all runs.
    setups = {"alone": healthy, "crowded": healthy + broken}
    rates: dict[str, list[_Rate]] = {name: [] for name in setups}

    def ratio(measure: str) -> float:
        crowded, alone = (
            statistics.median(getattr(rate, measure) for rate in rates[name])
            for name in ("crowded", "alone")
        )
        return float(crowded / alone)

    for pairs in (1, 2):
        for _pair in range(pairs):
            for name, cameras in setups.items():
                # 8 s holds hundreds of healthy inferences.
                rate = _inference_rate(
                    services=services, config=config(cameras), healthy=ids, window_s=8
                )
                rates[name].append(rate)
                print(f"{name}: {rate.per_s:.1f}/s, {rate.per_cpu_s:.2f}/CPU-s", flush=True)
        if ratio("per_cpu_s") >= CPU_BAR and ratio("per_s") >= THROUGHPUT_BAR:
            break
    rounded = {
        name: [(round(r.per_s, 1), round(r.per_cpu_s, 2)) for r in values]
        for name, values in rates.items()
    }
    assert ratio("per_cpu_s") >= CPU_BAR, (
        f"healthy inferences per CPU-second with broken cameras {ratio('per_cpu_s'):.2f} "
        f"of alone (per s, per CPU-s): {rounded}"
    )
    assert ratio("per_s") >= THROUGHPUT_BAR, (
        f"healthy throughput with broken cameras {ratio('per_s'):.2f} of alone "
        f"(per s, per CPU-s): {rounded}"
    )


# ------------------------------------------------------------------------------------------
# 6. Slow consumer


@pytest.mark.alone  # a latency bar
async def test_slow_consumer_drops_frames_memory_flat_latency_bounded(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: Any,
    services: Callable[..., ServiceProcess],
) -> None:
    node, _ = new_node()
    config = make_config(
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        node=node,
        detect_fps=30,
        cameras=[
            {"id": f"cam{index}", "url": str(video), "loop": True}
            for index, video in enumerate(SHARED_VIDEOS)
        ],
        model={"performance_hint": "LATENCY", "infer_requests": 1, "inference_threads": 1},
    )
    cameras = [f"cam{i}" for i in range(4)]
    service = services(config)
    await asyncio.to_thread(service.wait_ready)
    assert service.process is not None
    pid = service.process.pid
    # Warm-up: every camera's frames inferred (buffers, decoder and inference arenas are
    # allocated by then) and the overload reached (the slots drop).
    await poll(
        lambda: _overloaded(service.metrics(), cameras), timeout=60, what="every camera inferred"
    )
    first = await asyncio.to_thread(service.metrics)
    rss = []
    for _ in range(11):
        rss.append(rss_mib(pid))
        await asyncio.sleep(1)
    last = await asyncio.to_thread(service.metrics)
    # The averages of the first and the last three samples lie 8 s apart: growth below
    # 5 MiB is below 0.625 MiB/s, the rate the 20 s window before allowed. One frame kept per
    # inference (a queue of frames) grows by tens of MiB/s.
    growth = sum(rss[-3:]) / 3 - sum(rss[:3]) / 3
    assert growth < 5, f"RSS grew {growth:.1f} MiB over 10 s: {rss}"
    dropped_before = sum(per_camera(first, "edge_facedet_frames_dropped_total").values())
    dropped_after = sum(per_camera(last, "edge_facedet_frames_dropped_total").values())
    assert dropped_after > dropped_before, "cameras outpace inference: the slots must drop"
    p99 = p99_upper_bound(last, "edge_facedet_pipeline_latency_seconds")
    # A queue anywhere would grow latency without bound (cameras ask 120 frames/s of a
    # detector doing far fewer: a FIFO would pass 10 s); 1 s unless overloaded, never above 5 s.
    bar = min(5.0, 1.0 * overload_factor())
    assert p99 <= bar, f"pipeline latency p99 <= {p99} s (bar {bar:.1f} s)"
    assert_frames_accounted(last, cameras, slack=4)
    code, _ = await asyncio.to_thread(service.terminate)
    assert code == 0


def _overloaded(samples: Samples, cameras: list[str]) -> bool:
    inferred = per_camera(samples, "edge_facedet_frames_inferred_total")
    dropped = per_camera(samples, "edge_facedet_frames_dropped_total")
    return all(inferred.get(c, 0) >= 1 for c in cameras) and sum(dropped.values()) > 0


# ------------------------------------------------------------------------------------------
# 7. Stopping: SIGTERM while a camera hangs in open and inference runs; SIGKILL


async def test_sigterm_during_reconnect_and_inference_exits_0_and_sigkill_leaves_offline(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: Any,
    blackhole: int,
    services: Callable[..., ServiceProcess],
) -> None:
    term_node, term_prefix = new_node()
    kill_node, kill_prefix = new_node()
    term_config = make_config(
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        node=term_node,
        detect_fps=15,
        cameras=[
            # Default (10 s) timeouts: the reader is inside a blocking open when SIGTERM comes.
            {
                "id": "hung",
                "url": f"rtsp://127.0.0.1:{blackhole}/x",
                "open_timeout_s": 10,
                "read_timeout_s": 10,
            },
            {"id": "event", "url": str(FACE_VIDEO), "loop": True},
        ],
    )
    kill_config = make_config(
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        node=kill_node,
        cameras=[{"id": "event", "url": str(FACE_VIDEO), "loop": True}],
    )
    async with mqtt_subscriber(
        f"{term_prefix}/status", host=mqtt_broker.host, port=mqtt_broker.port
    ) as term_status:
        terminated = services(term_config)
        killed = services(kill_config)
        await asyncio.to_thread(terminated.wait_ready)
        await asyncio.to_thread(killed.wait_ready)
        await poll(
            lambda: (
                camera_value(terminated.metrics(), "edge_facedet_frames_inferred_total", "event")
                > 5
            ),
            timeout=30,
            what="inference running",
        )
        await asyncio.sleep(1)  # the hung camera is now inside its 10 s open
        code, seconds = await asyncio.to_thread(terminated.terminate)
        assert code == 0, terminated.log()[-3000:]
        assert seconds < 5
        await term_status.wait_for(lambda m: any(x.payload == b"stopped" for x in m), timeout=5)
    assert "edge-facedet stopped" in terminated.log()

    await poll(
        lambda: killed.health()[1].get("frames_inferred", 0) > 0,
        timeout=30,
        what="frames inferred before SIGKILL",
    )
    assert killed.process is not None
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait(timeout=10)
    async with mqtt_subscriber(
        f"{kill_prefix}/status", host=mqtt_broker.host, port=mqtt_broker.port
    ) as late:
        received = await late.wait_for(
            lambda m: bool(m) and m[-1].payload == b"offline", timeout=10
        )
        assert received[-1].retain


# ------------------------------------------------------------------------------------------
# The service manager stops reading sd_notify messages


async def test_unread_notify_socket_does_not_freeze_the_service(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: Any,
    services: Callable[..., ServiceProcess],
) -> None:
    # A hung or busy PID 1 stops reading $NOTIFY_SOCKET; its queue fills and a blocking
    # send would stall the event loop: no results handled, SIGTERM never acted on.
    node, _ = new_node()
    config = make_config(
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        node=node,
        cameras=[{"id": "event", "url": str(FACE_VIDEO), "loop": True}],
    )
    # WATCHDOG_USEC=0.2 s: a ping every 0.1 s fills the unread queue within seconds.
    service = services(config, watchdog_usec=200_000)
    await asyncio.to_thread(service.wait_ready)
    await poll(lambda: "queue is full" in service.log(), timeout=60, what="the notify queue filled")
    health_before = (await asyncio.to_thread(service.health))[1]["frames_inferred"]
    await poll(
        lambda: service.health()[1]["frames_inferred"] > health_before + 5,
        timeout=20,
        what="results still handled on the event loop",
    )
    code, seconds = await asyncio.to_thread(service.terminate)
    assert code == 0
    assert seconds < 5


# ------------------------------------------------------------------------------------------
# 8. Bad configuration at `run`: exit 2, the field named, no traceback


@pytest.mark.parametrize(
    ("model", "fragments"),
    [
        pytest.param(
            {"dir": "{tmp}/no-models"}, ("model.dir", "no-models", "is missing"), id="dir"
        ),
        pytest.param({"path": "{tmp}/nowhere.xml"}, ("model.path", "nowhere.xml"), id="path"),
        pytest.param(
            {"path": "{tmp}/only-xml.xml"}, ("model.path", "only-xml.bin"), id="bin-missing"
        ),
    ],
)
def test_run_with_a_missing_model_exits_2_naming_the_field(
    tmp_path: Path, model: dict[str, str], fragments: tuple[str, ...]
) -> None:
    (tmp_path / "only-xml.xml").write_text("<net/>")
    config = {
        "model": {key: value.format(tmp=tmp_path) for key, value in model.items()},
        "metrics": {"port": 0},
        "cameras": [{"id": "door", "url": "rtsp://192.0.2.1/stream"}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    result = run_cli("run", "--config", path, timeout=60)
    assert result.returncode == 2, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param(
            "mqtt: {username: u, password: {file: /nonexistent/mqtt.pass}}\n"
            "cameras: [{id: a, url: 'rtsp://h/x'}]\n",
            ("mqtt.password", "/nonexistent/mqtt.pass"),
            id="unreadable-password-file",
        ),
        pytest.param(
            "cameras: [{id: a, url: 'rtsp://h/x'}]\na: &a [x, x]\nb: [*a, *a]\n",
            ("aliases",),
            id="yaml-bomb",
        ),
        pytest.param(
            "cameras: [{id: a, url: 'rtsp://h/x', detect_fps: 5, detect_fps: 6}]\n",
            ("duplicate key 'detect_fps'",),
            id="duplicate-key",
        ),
        pytest.param(
            "cameras: [{id: a, url: 'rtsp://h/x'}, {id: a, url: 'rtsp://h/y'}]\n",
            ("duplicate camera id 'a'",),
            id="duplicate-camera-id",
        ),
        pytest.param(
            "cameras: [{id: a, url: 'rtsp://h/x', fsp: 5}]\n",
            ("fsp", "Extra inputs"),
            id="unknown-key",
        ),
        pytest.param(
            "cameras: [{id: door, url: 'rtsp://cam/stream', detect_fps: -1}]\n",
            ("detect_fps", "door"),
            id="negative-fps",
        ),
        pytest.param(
            "mqtt: {tls: {enabled: true, insecure: true}}\n"
            "cameras: [{id: a, url: 'rtsp://192.0.2.1/x'}]\n",
            ("mqtt.tls.insecure", "allow_insecure"),
            id="insecure-tls",
        ),
    ],
)
def test_run_with_bad_config_exits_2_naming_the_field(
    tmp_path: Path, text: str, fragments: tuple[str, ...]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = run_cli("run", "--config", path, timeout=60)
    assert result.returncode == 2, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_non_utf8_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"cameras: [{id: a, url: '\xff\xfe'}]\n")
    result = run_cli("run", "--config", path, timeout=60)
    assert result.returncode == 2
    assert "not UTF-8" in result.stderr
    assert "Traceback" not in result.stderr
