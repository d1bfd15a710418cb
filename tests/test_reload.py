"""Reloading the configuration (SIGHUP) of a running service, and what a reload would change.

The service runs as a user runs it (`edge-facedet run`, real RTSP cameras, the real broker,
the model); each step rewrites the file, sends SIGHUP, reads RELOADING=1 / READY=1 from the
notify socket, and measures the largest capture gap of the cameras the step does not touch
(from their faces messages' capture_ts, every frame published). The diff itself and the
manifest of announced cameras are checked on their own, without the service.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from edge_facedet.config import ServiceConfig
from edge_facedet.config.base import MAX_ID_LENGTH
from edge_facedet.config.diff import diff_configs
from edge_facedet.config.mqtt import MqttConfig
from edge_facedet.config.service import MAX_CAMERAS
from edge_facedet.outputs.metrics import Metrics
from edge_facedet.outputs.mqtt.output import MqttOutput
from tests.support.broker import mqtt_subscriber
from tests.support.load import load_slack
from tests.support.service import faces_of, service_config

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.support.broker import BrokerAddress, Received
    from tests.support.media import ClipMaker
    from tests.support.rtsp import RtspServer
    from tests.support.service import ServiceProcess

DETECT_PERIOD_S = 1 / 5  # service_config's detect_fps


def config_of(cameras: list[dict[str, Any]], **top: Any) -> ServiceConfig:
    return ServiceConfig.model_validate({"node_id": "n1", **top, "cameras": cameras})


# -- the diff, pure ------------------------------------------------------------------------


def test_diff_names_added_removed_and_changed_cameras_with_their_fields() -> None:
    old = config_of([{"id": "a", "url": "/dev/video0"}, {"id": "b", "url": "/dev/video1"}])
    new = config_of(
        [
            {"id": "a", "url": "/dev/video0", "detect_fps": 2},
            {"id": "c", "url": "/dev/video2"},
        ]
    )
    diff = diff_configs(old, new)
    assert diff.added == ("c",)
    assert diff.removed == ("b",)
    assert [(c.camera_id, c.fields) for c in diff.changed] == [("a", ("detect_fps",))]
    assert diff.mqtt == () and diff.restart_required == ()


def test_diff_sees_defaults_merged_into_cameras_and_disabled_as_removed() -> None:
    old = config_of([{"id": "a", "url": "/dev/video0"}, {"id": "b", "url": "/dev/video1"}])
    new = config_of(
        [{"id": "a", "url": "/dev/video0"}, {"id": "b", "url": "/dev/video1", "enabled": False}],
        defaults={"confidence_threshold": 0.7},
    )
    diff = diff_configs(old, new)
    assert diff.removed == ("b",)
    assert [(c.camera_id, c.fields) for c in diff.changed] == [("a", ("confidence_threshold",))]
    assert diff.restart_required == ()  # defaults apply live, through the cameras


def test_diff_separates_mqtt_from_what_needs_a_restart() -> None:
    cameras = [{"id": "a", "url": "/dev/video0"}]
    old = config_of(cameras)
    new = config_of(
        cameras,
        node_id="n2",
        model={"batch_size": 2},
        metrics={"port": 9200},
        mqtt={"port": 1884, "username": "edge", "password": {"env": "MQTT_PASSWORD"}},
    )
    diff = diff_configs(old, new)
    assert diff.mqtt == ("mqtt.port", "mqtt.username", "mqtt.password")
    assert diff.restart_required == ("node_id", "model.batch_size", "metrics.port")
    lines = diff.lines()
    assert "model.batch_size: changed (applies at the next start)" in lines
    assert "mqtt: changed (reconnects): mqtt.port, mqtt.username, mqtt.password" in lines
    assert diff_configs(old, config_of(cameras)).lines() == ["no change"]


def test_check_config_against_prints_the_reload_difference(tmp_path: Path) -> None:
    from io import StringIO

    from edge_facedet.checkconfig import check_config

    running, new = tmp_path / "running.yaml", tmp_path / "new.yaml"
    running.write_text(yaml.safe_dump({"node_id": "n", "cameras": [{"id": "a", "url": "0"}]}))
    new.write_text(
        yaml.safe_dump(
            {"node_id": "n", "model": {"batch_size": 2}, "cameras": [{"id": "b", "url": "0"}]}
        )
    )
    out, err = StringIO(), StringIO()
    assert check_config(new, out=out, err=err, against=running) == 0, err.getvalue()
    text = out.getvalue()
    assert "camera b: added (starts)" in text
    assert "camera a: removed (stops)" in text
    assert "model.batch_size: changed (applies at the next start)" in text


# -- the manifest, with the real broker ------------------------------------------------------


async def after_a_run(
    broker: BrokerAddress, node: str, *, earlier: dict[str, bytes], kept: str, **mqtt: Any
) -> dict[str, bytes]:
    """Retain `earlier` (an earlier run's topics: payloads), run an output announcing camera
    `kept` until it says online, and return what stays retained under its cameras' topics."""
    import aiomqtt

    prefix = f"edge-facedet/{node}"
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for topic, payload in earlier.items():
            await client.publish(f"{prefix}/{topic}", payload, qos=1, retain=True)
    config = MqttConfig(host=broker.host, port=broker.port, **mqtt)
    output = MqttOutput(config=config, node_id=node, metrics=Metrics())
    output.announce(cameras=config_of([{"id": kept, "url": "/dev/video0"}]).cameras)
    task = asyncio.create_task(output.run())
    try:
        async with mqtt_subscriber(f"{prefix}/status", host=broker.host, port=broker.port) as st:
            await st.wait_for(lambda ms: any(m.payload == b"online" for m in ms), timeout=30)
    finally:
        await output.close()
        await task
    async with mqtt_subscriber(f"{prefix}/cameras/#", host=broker.host, port=broker.port) as late:
        await late.wait_for(lambda ms: any(m.topic == f"{prefix}/cameras" for m in ms))
        await asyncio.sleep(0.3)  # let any other retained message arrive
        return {m.topic.removeprefix(f"{prefix}/"): m.payload for m in late.messages}


async def test_first_connect_clears_cameras_the_previous_run_announced_and_no_longer_has(
    mqtt_broker: BrokerAddress,
) -> None:
    earlier = {
        "cameras": b'["gone","kept"]',
        "cameras/gone/state": b"{}",
        "cameras/gone/snapshot": b"jpeg",
    }
    node = f"reload-{uuid.uuid4().hex[:10]}"
    retained = await after_a_run(
        mqtt_broker, node, earlier=earlier, kept="kept", home_assistant_discovery=True
    )
    assert json.loads(retained.pop("cameras")) == ["kept"]
    assert "cameras/gone/state" not in retained
    assert "cameras/gone/snapshot" not in retained


async def test_the_largest_manifest_the_configuration_allows_is_read_back(
    mqtt_broker: BrokerAddress, caplog: pytest.LogCaptureFixture
) -> None:
    # As many cameras as a configuration may hold, each id as long as allowed: the manifest
    # an earlier run left is the one large message the service reads. It must fit the
    # inbound packet cap, or the broker drops it and the removed cameras stay retained.
    longest = [f"{i:04d}".rjust(MAX_ID_LENGTH, "g") for i in range(MAX_CAMERAS)]
    manifest = json.dumps(longest, separators=(",", ":")).encode()
    assert len(manifest) > 4 * 64 * 1024  # far over the acknowledgements' share of the cap
    gone = longest[:2]
    earlier = {"cameras": manifest} | {f"cameras/{camera}/state": b"{}" for camera in gone}
    caplog.set_level(logging.INFO, logger="edge_facedet.outputs.mqtt")
    node = f"reload-{uuid.uuid4().hex[:10]}"
    retained = await after_a_run(mqtt_broker, node, earlier=earlier, kept="kept")
    assert json.loads(retained.pop("cameras")) == ["kept"]
    assert not [t for t in retained if any(camera in t for camera in gone)], retained
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, problems
    assert any(f"removed camera(s) {gone[0]}, {gone[1]}," in r.getMessage() for r in caplog.records)


# -- the service, with real cameras and the broker --------------------------------------------


def capture_seconds(payload: dict[str, Any]) -> float:
    return datetime.fromisoformat(payload["capture_ts"].replace("Z", "+00:00")).timestamp()


def run_of(payload: dict[str, Any]) -> str:
    """The faces message's reader run (its event_id without the seq): new at each restart."""
    return str(payload["event_id"]).rsplit("-", 1)[0]


def largest_gap(
    messages: list[Received], prefix: str, cameras: list[str], *, start: float, end: float
) -> float:
    """The largest step between consecutive capture times of each camera's current reader
    that overlaps [start, end]: a pause longer than the window counts whole, from the last
    frame before it to the first after it. A reader an earlier step restarted has a run id of
    its own (the faces' event_id); its predecessor's last frame is not a pause of it."""
    worst = 0.0
    for camera in cameras:
        payloads = faces_of(messages, prefix, camera)
        run = run_of(payloads[-1])
        times = sorted(capture_seconds(p) for p in payloads if run_of(p) == run)
        steps = [b - a for a, b in itertools.pairwise(times) if b >= start and a <= end]
        assert steps, f"{camera}: no frames on both sides of the marks"
        worst = max(worst, *steps)
    return worst


def tracks_of(messages: list[Received], prefix: str, camera: str) -> dict[str, list[str]]:
    """Each track's events in order: `new`, `update`, ..., `end:<reason>`."""
    topic = f"{prefix}/cameras/{camera}/events"
    tracks: dict[str, list[str]] = {}
    for event in (json.loads(m.payload) for m in messages if m.topic == topic):
        kind = event["type"] if event["type"] != "end" else f"end:{event['end_reason']}"
        tracks.setdefault(event["event_id"], []).append(kind)
    return tracks


class Steps:
    """Rewrites the service's file, sends SIGHUP and waits for the reload to finish."""

    def __init__(self, service: ServiceProcess, config: dict[str, Any]) -> None:
        self.service = service
        self.config = config

    async def reload(self, text: str) -> tuple[float, float]:
        """Write `text`, SIGHUP; (wall time before, wall time after READY=1)."""
        service = self.service
        seen = len(service.poll_notifications())
        service.config_path.write_text(text)
        before = time.time()
        assert service.process is not None
        service.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while True:
            new = service.poll_notifications()[seen:]
            reloading = [i for i, n in enumerate(new) if n.startswith("RELOADING=1")]
            if reloading and any(n.startswith("READY=1") for n in new[reloading[0] :]):
                assert "MONOTONIC_USEC=" in new[reloading[0]]
                return before, time.time()
            assert time.monotonic() < deadline, f"no RELOADING/READY: {new}\n{service.log()}"
            await asyncio.sleep(0.05)

    async def reload_with(
        self, cameras: list[dict[str, Any]], **changes: Any
    ) -> tuple[float, float]:
        self.config = {**self.config, **changes, "cameras": cameras}
        return await self.reload(yaml.safe_dump(self.config, sort_keys=False))


async def test_reload_adds_removes_changes_cameras_and_refuses_broken_files(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    services: Callable[..., ServiceProcess],
    tmp_path: Path,
) -> None:
    # 10 fps: decoding four 25 fps streams alone puts a loaded box's readers seconds behind.
    clip = h264_clip.repeated(seconds=60, width=640, height=360, fps=10)
    server = rtsp_server(mounts=dict.fromkeys(("a", "b", "c", "d"), clip))
    node = f"reload-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    camera = {name: {"id": name, "url": server.url(name)} for name in "abcd"}
    # Step 2 checks that the reload ends c's open tracks: none may end on its own before it,
    # whenever it comes (a face out of view for max_age_s, a reader that a loaded box starves
    # past FAST_RECONNECT's timeouts).
    camera["c"].update(tracking={"max_age_s": 600}, read_timeout_s=30, stall_timeout_s=30)
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=[camera["a"], camera["b"], camera["c"]],
    )
    config["mqtt"]["home_assistant_discovery"] = True
    # A loaded box reads behind the live stream: detect those frames anyway (not the subject),
    # or a camera that fell behind publishes nothing until it has caught up.
    config["defaults"]["max_lag_s"] = 10
    table: list[tuple[str, float, str]] = []

    async def untouched_gap(sub: Any, cameras: list[str], start: float, ready: float) -> float:
        end = ready + 1.0
        await sub.wait_for(
            lambda ms: all(
                any(capture_seconds(p) > end for p in faces_of(ms, prefix, c)) for c in cameras
            ),
            timeout=30,
        )
        return largest_gap(sub.messages, prefix, cameras, start=start - 0.5, end=end)

    def config_message(sub: Any) -> dict[str, Any]:
        return json.loads(sub.on(f"{prefix}/config")[-1].payload)

    async with mqtt_subscriber(
        (f"{prefix}/#", "homeassistant/+/+/config"),
        host=mqtt_broker.host,
        port=mqtt_broker.port,
    ) as sub:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)
        steps = Steps(service, config)
        await sub.wait_for(
            lambda ms: all(len(faces_of(ms, prefix, c)) >= 3 for c in "abc"), timeout=30
        )
        assert config_message(sub)["result"] == "ok"

        # 0. baseline: the same window with no reload at all (how steady this box is)
        start = time.time()
        gap = await untouched_gap(sub, ["a", "b", "c"], start, start + 0.5)
        table.append(("baseline (no reload)", gap, "-"))

        # 1. add d
        start, ready = await steps.reload_with([camera[c] for c in "abcd"])
        await sub.wait_for(lambda ms: len(faces_of(ms, prefix, "d")) >= 2, timeout=15)
        gap = await untouched_gap(sub, ["a", "b", "c"], start, ready)
        table.append(("add d", gap, config_message(sub)["changes"][0]))

        # 2. remove c: its open tracks end (`reload`), its retained state and discovery are
        # cleared, the manifest follows
        await sub.wait_for(lambda ms: bool(tracks_of(ms, prefix, "c")), timeout=15)
        mark = len(sub.messages)
        start, ready = await steps.reload_with([camera[c] for c in "abd"])
        gap = await untouched_gap(sub, ["a", "b", "d"], start, ready)
        after = sub.messages[mark:]
        cleared = {m.topic for m in after if m.payload == b""}
        assert f"{prefix}/cameras/c/state" in cleared
        assert f"{prefix}/cameras/c/snapshot" in cleared
        assert f"homeassistant/binary_sensor/{node}_c_face_present/config" in cleared
        manifests = [json.loads(m.payload) for m in after if m.topic == f"{prefix}/cameras"]
        assert manifests[-1] == ["a", "b", "d"]
        for kind in ("state", "snapshot"):  # nothing retained of c comes after its clearing
            assert [m.payload for m in after if m.topic == f"{prefix}/cameras/c/{kind}"][-1] == b""

        def c_ended(messages: list[Received]) -> bool:
            return all(
                kinds[-1].startswith("end") for kinds in tracks_of(messages, prefix, "c").values()
            )

        await sub.wait_for(c_ended, timeout=15)  # times out if the reload left one open
        for kinds in tracks_of(sub.messages, prefix, "c").values():
            ends = [kind for kind in kinds if kind.startswith("end")]
            assert kinds[0] == "new" and ends == ["end:reload"] == kinds[-1:], kinds
        table.append(("remove c", gap, config_message(sub)["changes"][0]))

        # 3. change a's detect_fps: a restarts, b and d go on
        changed_a = {**camera["a"], "detect_fps": 3}
        run_a = run_of(faces_of(sub.messages, prefix, "a")[-1])
        start, ready = await steps.reload_with([changed_a, camera["b"], camera["d"]])
        gap = await untouched_gap(sub, ["b", "d"], start, ready)
        assert config_message(sub)["changes"] == ["camera a: changed (restarts): detect_fps"]
        table.append(("a detect_fps 5->3", gap, config_message(sub)["changes"][0]))
        # The restarted a is an untouched camera of the next steps once its new reader runs
        # (its first frame waits for a keyframe).
        await sub.wait_for(
            lambda ms: sum(run_of(p) != run_a for p in faces_of(ms, prefix, "a")) >= 2,
            timeout=15,
        )

        # 4. broken files: refused, every camera goes on, and each is reported
        good = yaml.safe_dump(steps.config, sort_keys=False)
        broken = {
            "bad YAML": good + "cameras: [\n",
            "unknown key": good + "colour: blue\n",
            "missing secret": yaml.safe_dump(
                {
                    **steps.config,
                    "mqtt": {
                        **steps.config["mqtt"],
                        "username": "edge",
                        "password": {"file": str(tmp_path / "no")},
                    },
                },
                sort_keys=False,
            ),
        }
        for name, text in broken.items():
            start, ready = await steps.reload(text)
            gap = await untouched_gap(sub, ["a", "b", "d"], start, ready)
            report = config_message(sub)
            assert report["result"] == "invalid", report
            assert report["problems"], report
            table.append((name, gap, report["problems"][0][-70:]))
        assert "mqtt.password" in " ".join(config_message(sub)["problems"])

        # 5. fixed
        start, ready = await steps.reload(good)
        gap = await untouched_gap(sub, ["a", "b", "d"], start, ready)
        assert config_message(sub)["result"] == "ok"
        table.append(("fixed", gap, config_message(sub)["changes"][0]))

        samples = await asyncio.to_thread(service.metrics)
        reloads = samples["edge_facedet_config_reloads_total"]
        assert reloads[(("result", "ok"),)] == 4
        assert reloads[(("result", "invalid"),)] == 3
        assert reloads[(("result", "failed"),)] == 0
        assert (("camera", "c"),) not in samples["edge_facedet_camera_up"]
        assert "reload refused" in service.log()
        code, _ = await asyncio.to_thread(service.terminate)
        assert code == 0, service.log()
        messages = list(sub.messages)

    print("\nstep | largest capture gap of untouched cameras | published")
    for name, gap, what in table:
        print(f"{name} | {gap:.3f} s | {what}")
    # `b` is never touched: one reader from start to end, whatever the reloads did (a
    # restart would start a new run id in its event ids and its seq again at 0).
    b_faces = faces_of(messages, prefix, "b")
    assert len({run_of(p) for p in b_faces}) == 1
    seqs = [p["seq"] for p in b_faces]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # The gaps themselves are a timing figure on a shared 2-core box (2 detect periods on a
    # quiet one: the table above, and docs/reliability.md); a stall of a second is a bug on a
    # quiet box. A starved box pauses every camera, reload or not: the bar widens with the
    # load, capped short of a reload that holds the event loop for seconds.
    bar = 5 * DETECT_PERIOD_S * load_slack(cap=3.0, what="reload: gaps of untouched cameras")
    for name, gap, _ in table[1:]:
        assert gap < bar, (name, gap, bar, table)


@pytest.fixture(autouse=True)
def _no_leftover_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_FACEDET_SHARD", raising=False)
