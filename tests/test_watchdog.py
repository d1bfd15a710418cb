"""The service's contract with its supervisor, run as systemd runs it (`edge-facedet run`).

The watchdog policy (edge_facedet/outputs/pipeline.py `pipeline_alive`): WATCHDOG=1 is sent
while frames reach the detector, and while every camera is down (a restart would not bring a
camera back); it is withheld when cameras stream but nothing is inferred, the wedge a restart
fixes. `/healthz` answers 503 once frames stop. SIGINT stops the service as SIGTERM does.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.support.broker import mqtt_subscriber
from tests.support.net import free_port
from tests.support.paths import FACE_VIDEO
from tests.support.service import ServiceProcess, poll, service_config, states_of
from tests.support.udpstream import slow_clock_stream

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.support.broker import BrokerAddress
    from tests.support.media import ClipMaker

# The service pings at half of WATCHDOG_USEC (systemd's advice), so 1 s with ServiceProcess's
# 2 s; STATUS= goes out on the same beat. Watching this long sees several beats.
BEATS_S = 4.0


def watchdog_count(service: ServiceProcess) -> int:
    return sum(n.count("WATCHDOG=1") for n in service.poll_notifications())


def status_count(service: ServiceProcess) -> int:
    return sum(n.count("STATUS=") for n in service.poll_notifications())


@pytest.mark.slow
async def test_watchdog_is_withheld_and_healthz_503_when_streaming_cameras_infer_nothing(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    h264_clip: ClipMaker,
    services: Callable[..., ServiceProcess],
) -> None:
    # A live stream whose clock runs at a quarter of real time: the reader falls "behind" it
    # within a second, and from then on every due frame is stale (not detected) while the
    # camera keeps streaming.
    clip = h264_clip.repeated(seconds=40, width=640, height=360)
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    with slow_clock_stream(clip=clip, clock_rate=0.25) as stream:
        config = service_config(
            node_id=node,
            model_root=model_root,
            model_cache=model_cache,
            mqtt_port=mqtt_broker.port,
            cameras=[{"id": "wedged", "url": stream.url}],
        )
        async with mqtt_subscriber(
            f"{prefix}/#", host=mqtt_broker.host, port=mqtt_broker.port
        ) as sub:
            service = services(config)
            await asyncio.to_thread(service.wait_ready)
            # While the first frames were inferred: healthy, and the watchdog is fed.
            health = await poll(
                lambda: (h := service.health())[0] == 200 and h[1], timeout=20, what="healthz 200"
            )
            assert health["frames_inferred"] >= 1
            assert (await asyncio.to_thread(service.http_get, "/livez"))[0] == 200
            await asyncio.to_thread(service.wait_notification, "WATCHDOG=1", 10)
            # Then frames stop reaching the detector (the flow window is 10 s).
            health = await poll(
                lambda: (h := service.health())[0] == 503 and h[1], timeout=25, what="healthz 503"
            )
            assert health["frames_flowing"] is False
            assert health["cameras"] == {"wedged": "streaming"}, health
            assert health["cameras_streaming"] == 1
            # /livez follows the watchdog: a liveness probe restarts this wedge.
            assert (await asyncio.to_thread(service.http_get, "/livez"))[0] == 503
            samples = await asyncio.to_thread(service.metrics)
            stale = samples["edge_facedet_frames_stale_total"][(("camera", "wedged"),)]
            assert stale >= 5  # the wedge is the one intended: read, due, not detected
            watchdogs_before = watchdog_count(service)
            statuses_before = status_count(service)
            await asyncio.sleep(BEATS_S)
            # The reporter kept beating (STATUS=), but fed no watchdog: systemd would restart.
            assert status_count(service) - statuses_before >= 2
            assert watchdog_count(service) == watchdogs_before, service.notifications[-6:]
            assert "cameras are streaming but no frame reached the detector" in service.log()
            assert stream.running()
            assert states_of(sub.messages, prefix, "wedged")[-1] == "streaming"
            code, _ = await asyncio.to_thread(service.terminate)
            assert code == 0, service.log()


async def test_watchdog_is_fed_while_every_camera_is_down(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    services: Callable[..., ServiceProcess],
) -> None:
    # Nothing listens on these ports: both cameras are refused and keep reconnecting.
    cameras = [
        {"id": "north", "url": f"rtsp://127.0.0.1:{free_port()}/stream"},
        {"id": "south", "url": f"rtsp://127.0.0.1:{free_port()}/stream"},
    ]
    config = service_config(
        node_id=f"test-{uuid.uuid4().hex[:10]}",
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=cameras,
    )
    service = services(config)
    await asyncio.to_thread(service.wait_ready)
    health = await poll(
        lambda: (
            (h := service.health()[1])["cameras"] == {c["id"]: "reconnecting" for c in cameras}
            and h
        ),
        timeout=15,
        what="both cameras reconnecting",
    )
    status, _ = await asyncio.to_thread(service.health)
    assert status == 503 and health["frames_inferred"] == 0
    before = watchdog_count(service)
    await asyncio.sleep(BEATS_S)
    # A restart would not bring a camera back: the watchdog stays fed, no restart loop.
    assert watchdog_count(service) - before >= 2, service.notifications[-6:]
    assert "no frame reached the detector" not in service.log()
    code, _ = await asyncio.to_thread(service.terminate)
    assert code == 0, service.log()


async def test_sigint_stops_the_service_like_sigterm(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    services: Callable[..., ServiceProcess],
) -> None:
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=[{"id": "event", "url": str(FACE_VIDEO), "loop": True}],
    )
    service = services(config)
    await asyncio.to_thread(service.wait_ready)
    await poll(lambda: service.health()[0] == 200, timeout=20, what="frames flowing")
    assert service.process is not None
    started = time.monotonic()
    service.process.send_signal(signal.SIGINT)  # as Ctrl-C in a terminal sends it
    code = await asyncio.to_thread(service.process.wait, 10)
    assert code == 0, service.log()
    assert time.monotonic() - started < 5
    # The orderly stop, not an interrupted one: STOPPING=1, outputs closed, `stopped` retained.
    assert any(n.startswith("STOPPING=1") for n in service.poll_notifications())
    assert "edge-facedet stopped" in service.log()
    async with mqtt_subscriber(
        f"{prefix}/status", host=mqtt_broker.host, port=mqtt_broker.port
    ) as late:
        received = await late.wait_for(bool, timeout=5)
        assert received[0].payload == b"stopped"
        assert received[0].retain
