"""Shards as a site runs them: N `edge-facedet run` processes, one config, a real broker.

Three processes of one configuration, told apart only by `EDGE_FACEDET_SHARD=I/3` (what a
StatefulSet's pods get), read 12 cameras of one RTSP server: every camera's faces come from
exactly the shard the assignment names, each shard announces its cameras on the retained
`<prefix>/shard`, a shard killed with SIGKILL gets its Last Will and its cameras go dark while
the others keep publishing, and restarted it is back. A shard that owns no camera still runs
and reports itself up.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from edge_facedet.config import ServiceConfig
from edge_facedet.service import Service
from edge_facedet.sharding import assign, camera_loads, shard_loads
from tests.support.broker import delete_retained, mqtt_subscriber
from tests.support.media import run_ffmpeg
from tests.support.paths import FACE_VIDEO
from tests.support.service import service_config

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.support.broker import BrokerAddress, Received
    from tests.support.rtsp import RtspServer
    from tests.support.service import ServiceProcess

pytestmark = pytest.mark.slow

SHARDS = 3
CAMERAS = [f"cam-{i:02d}" for i in range(12)]
# The 12-camera test's waits, each at most: a start, faces seen, the Last Will.
READY_S, SEEN_S, WILL_S = 90.0, 30.0, 10.0
# The one shared mount plays its clip once, from its first client on: the clip outlasts every
# wait, or a loaded box that needs them finds every camera `reconnecting` at the stream's end.
CLIP_S = 2 * READY_S + 3 * SEEN_S + WILL_S
LOBBY_UNIT_S = 20


def lobby_clip(directory: Path) -> Path:
    """CLIP_S of the event-faces footage as a camera's substream sends it: 320x180 at 10 fps,
    300 kbit/s, no B-frames.

    Twelve clients share the mount over TCP. At the shared clip maker's bit rate (made for
    720p) a loaded box reads them too slowly, and the test server (gst-rtsp-server 1.22)
    aborts on a slow client's TCP backlog (`queue_duration >= 0`): every camera reconnects.
    A LOBBY_UNIT_S encode is copied end to end (a mux, not an encode): decoding 280 s of the
    source footage took 13 s of the test's time, and the test needs the stream to last, not
    new pictures.
    """
    target = directory / f"lobby-{CLIP_S:.0f}s.mp4"
    if target.exists():
        return target
    unit = directory / f"lobby-{LOBBY_UNIT_S}s.mp4"
    run_ffmpeg(
        "-stream_loop", "-1", "-i", str(FACE_VIDEO), "-t", str(LOBBY_UNIT_S), "-an",
        "-vf", "scale=320:180,setsar=1", "-r", "10", "-c:v", "libx264", "-preset",
        "ultrafast", "-g", "20", "-bf", "0", "-b:v", "300k", "-pix_fmt", "yuv420p",
        output=unit,
    )  # fmt: skip
    listing = directory / "lobby.txt"
    listing.write_text(f"file '{unit}'\n" * math.ceil(CLIP_S / LOBBY_UNIT_S))
    run_ffmpeg(
        "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
        "-movflags", "+faststart",
        output=target,
    )  # fmt: skip
    return target


@pytest.fixture
def node(mqtt_broker: BrokerAddress) -> Iterator[str]:
    """A fresh node id; its shards' retained messages are deleted afterwards."""
    name = f"shards-{uuid.uuid4().hex[:8]}"
    yield name
    filters = tuple(f"edge-facedet/{name}-{shard}/#" for shard in range(SHARDS))
    delete_retained(mqtt_broker, filters=filters, settle_s=0.5)


def faces_count(messages: list[Received], *, prefix: str, camera: str, after: int = 0) -> int:
    topic = f"{prefix}/cameras/{camera}/faces"
    return sum(1 for m in messages[after:] if m.topic == topic)


def publishers(messages: list[Received], *, prefixes: list[str], camera: str) -> set[int]:
    return {
        shard
        for shard, prefix in enumerate(prefixes)
        if faces_count(messages, prefix=prefix, camera=camera)
    }


def index_of(messages: list[Received], *, topic: str, payload: bytes, after: int = 0) -> int:
    """The position of the first such message from `after` on, or -1."""
    return next(
        (i for i in range(after, len(messages)) if (messages[i].topic, messages[i].payload)
         == (topic, payload)),
        -1,
    )  # fmt: skip


async def test_three_shards_split_twelve_cameras_and_survive_one_being_killed(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    tmp_path_factory: pytest.TempPathFactory,
    rtsp_server: Callable[..., RtspServer],
    services: Callable[..., ServiceProcess],
    node: str,
) -> None:
    # One shared mount (one pipeline for every client), small and slow: the three processes
    # and their 12 readers share this machine's cores.
    server = rtsp_server(mounts={"lobby": lobby_clip(tmp_path_factory.mktemp("lobby"))})
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=[{"id": camera, "url": server.url("lobby")} for camera in CAMERAS],
    )
    # A loaded box reads behind the live stream: detect those frames anyway (not the subject).
    config["defaults"].update(detect_fps=2, max_lag_s=10)
    config["metrics"] = {"enabled": False}  # one file, three processes: no shared port
    loads = camera_loads(ServiceConfig.model_validate(config).cameras)
    expected = assign(loads, count=SHARDS)
    costs = shard_loads(loads, expected)
    print("\nshard  cost  cameras")
    for shard, cameras in expected.items():
        print(f"{shard}      {costs[shard]:.2f}  {', '.join(cameras)}")
    prefixes = [f"edge-facedet/{node}-{shard}" for shard in range(SHARDS)]
    envs = [{"EDGE_FACEDET_SHARD": f"{shard}/{SHARDS}"} for shard in range(SHARDS)]

    async with mqtt_subscriber(
        tuple(f"{prefix}/#" for prefix in prefixes), host=mqtt_broker.host, port=mqtt_broker.port
    ) as sub:
        started = time.monotonic()
        shards = [services(config, env=env, watchdog_usec=None) for env in envs]
        await asyncio.gather(*(asyncio.to_thread(s.wait_ready, READY_S) for s in shards))
        print(f"three shards ready in {time.monotonic() - started:.1f} s")

        def every_camera_seen(messages: list[Received], after: int = 0) -> bool:
            return all(
                faces_count(messages, prefix=prefixes[shard], camera=camera, after=after) >= 2
                for shard, cameras in expected.items()
                for camera in cameras
            )

        await sub.wait_for(every_camera_seen, timeout=SEEN_S)
        for camera in CAMERAS:
            owner = next(shard for shard, cameras in expected.items() if camera in cameras)
            assert publishers(sub.messages, prefixes=prefixes, camera=camera) == {owner}
        for shard, prefix in enumerate(prefixes):
            announced = json.loads(sub.on(f"{prefix}/shard")[-1].payload)
            assert announced["index"] == shard and announced["count"] == SHARDS
            assert announced["cameras"] == expected[shard]
            assert announced["cost"] == pytest.approx(costs[shard], abs=1e-3)
            assert sub.on(f"{prefix}/status")[-1].payload == b"online"
            # The log says what the shard runs and its load against the others.
            summary = f"node {node}-{shard} is shard {shard} of {SHARDS}: "
            assert f"{summary}{len(expected[shard])} cameras, cost {costs[shard]:.2f}" in (
                shards[shard].log()
            )

        # One shard dies without a word: the broker sends its Last Will.
        victim = max(expected, key=lambda shard: len(expected[shard]))
        victim_prefix = prefixes[victim]
        shards[victim].process.kill()  # type: ignore[union-attr]
        await sub.wait_for(
            lambda m: index_of(m, topic=f"{victim_prefix}/status", payload=b"offline") >= 0,
            timeout=WILL_S,
        )
        dead_at = index_of(sub.messages, topic=f"{victim_prefix}/status", payload=b"offline")
        survivors = {s: cams for s, cams in expected.items() if s != victim}
        await sub.wait_for(
            lambda m: all(
                faces_count(m, prefix=prefixes[s], camera=c, after=dead_at) >= 2
                for s, cams in survivors.items()
                for c in cams
            ),
            timeout=SEEN_S,
        )
        assert all(
            faces_count(sub.messages, prefix=victim_prefix, camera=c, after=dead_at) == 0
            for c in expected[victim]
        )

        # Restarted (a StatefulSet recreates the pod), it takes its cameras back.
        shards[victim] = services(config, env=envs[victim], watchdog_usec=None)
        await asyncio.to_thread(shards[victim].wait_ready, READY_S)
        await sub.wait_for(
            lambda m: (
                index_of(m, topic=f"{victim_prefix}/status", payload=b"online", after=dead_at) >= 0
                and all(
                    faces_count(m, prefix=victim_prefix, camera=c, after=dead_at) >= 2
                    for c in expected[victim]
                )
            ),
            timeout=SEEN_S,
        )
        for camera in CAMERAS:
            assert len(publishers(sub.messages, prefixes=prefixes, camera=camera)) == 1
        codes = await asyncio.gather(*(asyncio.to_thread(s.terminate) for s in shards))
        assert [code for code, _ in codes] == [0] * SHARDS
        print(f"whole run {time.monotonic() - started:.1f} s")


def health(port: int) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return int(response.status), json.loads(response.read())


async def test_a_shard_without_cameras_still_runs_and_says_so(
    mqtt_broker: BrokerAddress, node: str
) -> None:
    # Two cameras over three shards: one shard owns none and must stay up (a StatefulSet
    # would restart an exiting pod forever), its status and shard topic showing it.
    settings = {
        "node_id": node,
        "mqtt": {"host": mqtt_broker.host, "port": mqtt_broker.port},
        "metrics": {"host": "127.0.0.1", "port": 0},
        "cameras": [{"id": camera, "url": str(FACE_VIDEO)} for camera in ("a", "b")],
    }
    config = ServiceConfig.model_validate(settings)
    table = assign(camera_loads(config.cameras), count=SHARDS)
    idle = next(shard for shard, cameras in table.items() if not cameras)
    prefix = f"edge-facedet/{node}-{idle}"
    service = Service(config=config, environ={"EDGE_FACEDET_SHARD": f"{idle}/{SHARDS}"})
    async with mqtt_subscriber(f"{prefix}/#", host=mqtt_broker.host, port=mqtt_broker.port) as sub:
        task = asyncio.create_task(service.run())
        ready = asyncio.create_task(service.ready.wait())
        await asyncio.wait((task, ready), timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert not task.done(), f"the idle shard exited: {task.result()}"
        await sub.wait_for(lambda m: bool(sub.on(f"{prefix}/shard")), timeout=10)
        assert json.loads(sub.on(f"{prefix}/shard")[-1].payload) == {
            "index": idle,
            "count": SHARDS,
            "cameras": [],
            "cost": 0.0,
            "loads": [float(len(table[s])) for s in range(SHARDS)],
        }
        await sub.wait_for(lambda m: bool(sub.on(f"{prefix}/status")), timeout=5)
        assert sub.on(f"{prefix}/status")[-1].payload == b"online"
        assert service.metrics_server is not None
        status, answer = await asyncio.to_thread(health, service.metrics_server.port)
        assert status == 200 and answer["cameras"] == {}
        registry = service.metrics.registry
        labels = {"index": str(idle), "count": str(SHARDS)}
        assert registry.get_sample_value("edge_facedet_shard_info", labels) == 1.0
        assert registry.get_sample_value("edge_facedet_shard_cameras") == 0.0
        service.request_stop()
        assert await asyncio.wait_for(task, 10) == 0
        await sub.wait_for(lambda m: sub.on(f"{prefix}/status")[-1].payload == b"stopped", 5)
