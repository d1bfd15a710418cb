"""The web page's API on the real HTTP server, in this process: routes, the image switch,
rate-bounded tiles, bounded event memory, auth, headers, and slow clients.

Frames are put into the web output's `LatestFrames` as the pipeline does; the pictures are
noise (a face region full of detail), so a blurred tile shows whether the face was hidden.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import cv2
import jsonschema
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge_facedet.config import CameraConfig, HttpAuthConfig, SecretSource
from edge_facedet.frames import ArrayPicture, Detections, Frame
from edge_facedet.outputs.http import MetricsServer
from edge_facedet.outputs.httpauth import HttpAuth
from edge_facedet.outputs.httpserver import HttpLimits
from edge_facedet.outputs.metrics import HttpMetrics
from edge_facedet.outputs.payloads import load_schema
from edge_facedet.outputs.snapshots.worker import SnapshotJob, SnapshotResult
from edge_facedet.outputs.tiles import TileEncoder, TileLimits
from edge_facedet.outputs.web import WebOutput
from tests.test_http_server import SlowClients, get

if TYPE_CHECKING:
    from collections.abc import Iterator

FACE = (0.4, 0.3, 0.6, 0.7)
"""The one face of every test frame, normalised."""
MODES = {"cam-frame": "frame", "cam-blur": "blurred_frame", "cam-crop": "crop", "cam-off": "off"}
USER, PASSWORD, TOKEN = "operator", "pass:word ü", "t0ken-Value"


def _camera(camera_id: str, mode: str) -> CameraConfig:
    return CameraConfig.model_validate(
        {"id": camera_id, "url": "/srv/clip.mp4", "snapshots": {"mode": mode}}
    )


def _frame(camera_id: str, seq: int, *, picture: bool) -> Frame:
    rng = np.random.default_rng(seq)
    image = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    return Frame(
        camera_id=camera_id,
        seq=seq,
        capture_time=datetime.now(timezone.utc),
        capture_monotonic=time.monotonic(),
        width=1280,
        height=720,
        image=np.zeros((448, 448, 3), np.uint8),
        picture=ArrayPicture(array=image) if picture else None,
    )


def _faces(count: int) -> Detections:
    boxes = np.array([FACE] * count, np.float32).reshape(-1, 4)
    return Detections(
        boxes_px=boxes * np.array([1280, 720, 1280, 720], np.float32),
        boxes_norm=boxes,
        confidences=np.full((count,), 0.9, np.float32),
    )


@dataclass
class Site:
    web: WebOutput
    server: MetricsServer

    @property
    def port(self) -> int:
        return self.server.port

    def put(self, camera_id: str, seq: int, faces: int = 1) -> None:
        picture = MODES[camera_id] != "off"  # as the readers do: pictures only with images on
        detections = _faces(faces)
        self.web.latest.put(
            frame=_frame(camera_id, seq, picture=picture),
            detections=detections,
            candidates=detections,
        )


@contextlib.contextmanager
def site(auth: HttpAuth | None = None, limits: HttpLimits | None = None) -> Iterator[Site]:
    web = WebOutput(node_id="node-1", cameras=[_camera(c, m) for c, m in MODES.items()])
    registry = CollectorRegistry()
    server = MetricsServer(
        host="127.0.0.1",
        port=0,
        registry=registry,
        health=lambda: (True, {"frames_flowing": True, "cameras_streaming": 4}),
        limits=limits,
        events=HttpMetrics(registry=registry),
        web=web,
        auth=auth,
    )
    server.start()
    try:
        yield Site(web=web, server=server)
    finally:
        server.stop()


@pytest.fixture
def web_site() -> Iterator[Site]:
    with site() as started:
        yield started


def _json(port: int, path: str, headers: str = "") -> Any:
    answer = get(port, path, headers=headers)
    assert answer.status == 200, (path, answer.status, answer.body[:200])
    assert answer.headers["content-type"] == "application/json"
    return json.loads(answer.body)


def _decode(jpeg: bytes) -> np.ndarray[Any, Any]:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return np.asarray(image)


def _face_detail(image: np.ndarray[Any, Any]) -> float:
    """Standard deviation of the face region's inner half: high for noise, low once hidden."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = FACE
    cx, cy, w, h = (
        (x0 + x1) / 2 * width,
        (y0 + y1) / 2 * height,
        (x1 - x0) * width,
        (y1 - y0) * height,
    )
    region = image[int(cy - h / 4) : int(cy + h / 4), int(cx - w / 4) : int(cx + w / 4)]
    return float(region.std())


# -- the API -----------------------------------------------------------------------------------


def test_cameras_api_reports_each_camera_and_its_image_switch(web_site: Site) -> None:
    for seq in range(3):
        for camera_id in MODES:
            web_site.put(camera_id, seq, faces=seq)
    web_site.web.set_camera_state(
        camera_id="cam-frame",
        payload=b'{"camera":"cam-frame","state":"streaming","fps_in":25.0,"fps_out":5.0,'
        b'"last_error":null,"reconnects":0,"frame":{"width":1280,"height":720},'
        b'"open_tracks":2,"ts":"2026-01-01T00:00:00.000Z"}',
    )
    body = _json(web_site.port, "/api/cameras")
    jsonschema.validate(body, load_schema("api_cameras"))
    cameras = {camera["id"]: camera for camera in body["cameras"]}
    assert list(cameras) == list(MODES)
    assert body["node"]["id"] == "node-1" and body["node"]["healthy"] is True
    frame = cameras["cam-frame"]
    assert (frame["state"], frame["fps_in"], frame["fps_out"], frame["open_tracks"]) == (
        "streaming", 25.0, 5.0, 2,
    )  # fmt: skip
    assert (frame["seq"], frame["frames"], frame["faces"], frame["faces_total"]) == (2, 3, 2, 3)
    assert frame["boxes"][0]["box_norm"] == pytest.approx(list(FACE), abs=1e-4)
    assert {c: (cameras[c]["images"], cameras[c]["image"]) for c in MODES} == {
        "cam-frame": ("frame", True),
        "cam-blur": ("blurred_frame", True),
        "cam-crop": ("crop", False),  # no face snapshot yet
        "cam-off": ("off", False),
    }
    assert cameras["cam-off"]["state"] == "starting"  # no state message yet


def test_tiles_obey_the_image_switch_and_blur_faces(web_site: Site) -> None:
    for camera_id in MODES:
        web_site.put(camera_id, 1)
    off = get(web_site.port, "/api/cameras/cam-off/latest.jpg")
    assert off.status == 404 and b"metadata only" in off.body
    assert not off.body.startswith(b"\xff\xd8")

    framed = get(web_site.port, "/api/cameras/cam-frame/latest.jpg")
    blurred = get(web_site.port, "/api/cameras/cam-blur/latest.jpg")
    assert framed.status == blurred.status == 200
    assert framed.headers["content-type"] == blurred.headers["content-type"] == "image/jpeg"
    frame_image, blur_image = _decode(framed.body), _decode(blurred.body)
    assert max(frame_image.shape[:2]) == 960  # scaled down from 1280 wide
    shown, hidden = _face_detail(frame_image), _face_detail(blur_image)
    assert shown > 25, "the frame tile shows the face"
    assert hidden < shown / 5, ("the blurred tile hides the face", hidden, shown)
    # Away from the face the blurred tile is the frame (noise): only faces are hidden.
    assert float(blur_image[:100, :100].std()) > 25

    # A crop camera shows its latest face snapshot, never its frame.
    assert get(web_site.port, "/api/cameras/cam-crop/latest.jpg").status == 404
    web_site.web.set_snapshot(camera_id="cam-crop", jpeg=b"\xff\xd8crop\xff\xd9")
    crop = get(web_site.port, "/api/cameras/cam-crop/latest.jpg")
    assert (crop.status, crop.body) == (200, b"\xff\xd8crop\xff\xd9")
    # A metadata-only camera never keeps a snapshot, even if one were handed over.
    web_site.web.set_snapshot(camera_id="cam-off", jpeg=b"\xff\xd8x")
    assert get(web_site.port, "/api/cameras/cam-off/latest.jpg").status == 404


def test_tiles_are_encoded_once_per_frame_and_at_a_bounded_rate() -> None:
    now = [100.0]
    cameras = {c: _camera(c, m) for c, m in MODES.items() if m in {"frame", "blurred_frame"}}
    tiles = TileEncoder(
        cameras=cameras, limits=TileLimits(min_interval_s=0.5, max_per_s=3), clock=lambda: now[0]
    )
    web = WebOutput(node_id="n", cameras=list(cameras.values()))

    def put(camera_id: str, seq: int) -> None:
        web.latest.put(
            frame=_frame(camera_id, seq, picture=True), detections=_faces(1), candidates=_faces(1)
        )

    def tile(camera_id: str) -> bytes | None:
        latest = web.latest.get(camera_id)
        assert latest is not None
        return tiles.tile(latest)

    put("cam-frame", 1)
    first = tile("cam-frame")
    assert first is not None
    assert all(tile("cam-frame") == first for _ in range(20))
    assert tiles.encodes == 1  # the same frame: the cached JPEG
    put("cam-frame", 2)
    now[0] += 0.2
    assert tile("cam-frame") == first and tiles.encodes == 1  # too soon after the last
    now[0] += 0.4
    second = tile("cam-frame")
    assert second != first and tiles.encodes == 2
    # The budget across cameras (3 a second here): over it, a camera gets its cached tile.
    now[0] = 200.0
    put("cam-blur", 1)
    put("cam-frame", 3)
    assert tile("cam-blur") is not None and tile("cam-frame") is not None
    assert tiles.encodes == 4  # the window of second 200 opened with these two
    now[0] = 200.6
    put("cam-blur", 2)
    put("cam-frame", 4)
    blur_before = tiles.tile(_latest(web, "cam-blur"))
    assert tiles.encodes == 5  # the third and last encode of this second
    assert tile("cam-frame") is not None and tiles.encodes == 5  # over budget: cached seq 3
    now[0] = 201.0
    assert tile("cam-frame") is not None and tiles.encodes == 6  # a new second, a new budget
    assert blur_before is not None


def _latest(web: WebOutput, camera_id: str) -> Any:
    latest = web.latest.get(camera_id)
    assert latest is not None
    return latest


def test_events_are_kept_newest_first_bounded_with_their_snapshots(web_site: Site) -> None:
    web = web_site.web
    for index in range(150):
        event = {"type": "new", "event_id": f"node-1-cam-crop-r-t{index}", "camera": "cam-crop"}
        web.publish_event(camera_id="cam-crop", payload=json.dumps(event).encode())
    job = SnapshotJob(
        camera_id="cam-crop",
        event_id="node-1-cam-crop-r-t149",
        picture=ArrayPicture(array=np.zeros((4, 4, 3), np.uint8)),
        mode=web.images("cam-crop"),
        config=web.cameras["cam-crop"].snapshots,
        box_norm=FACE,
        boxes_norm=(FACE,),
        time=datetime.now(timezone.utc),
    )
    web.snapshot_ready(SnapshotResult(job=job, jpeg=b"\xff\xd8one\xff\xd9", error=None, path=None))
    body = _json(web_site.port, "/api/events")
    jsonschema.validate(body, load_schema("api_events"))
    events = body["events"]
    assert len(events) == 100
    assert events[0]["event_id"].endswith("-t149") and events[-1]["event_id"].endswith("-t50")
    assert events[0]["snapshot_url"] is not None and events[1]["snapshot_url"] is None
    picture = get(web_site.port, events[0]["snapshot_url"])
    assert (picture.status, picture.body) == (200, b"\xff\xd8one\xff\xd9")
    assert get(web_site.port, "/api/events/snapshot.jpg?event_id=nope").status == 404

    # Snapshots in memory are bounded in bytes: the oldest go first.
    small = WebOutput(node_id="n", cameras=list(web.cameras.values()), snapshot_bytes=1000)
    for index in range(10):
        small.snapshot_ready(
            SnapshotResult(
                job=SnapshotJob(**{**_job_fields(job), "event_id": f"e{index}"}),
                jpeg=bytes(300),
                error=None,
                path=None,
            )
        )
    assert small.snapshot_bytes <= 1000
    assert small.event_snapshot("e9") is not None and small.event_snapshot("e0") is None


def _job_fields(job: SnapshotJob) -> dict[str, Any]:
    return {name: getattr(job, name) for name in SnapshotJob.__dataclass_fields__}


def test_page_assets_and_answers_carry_the_security_headers(web_site: Site) -> None:
    web_site.put("cam-frame", 1)
    for path, kind in (
        ("/", "text/html"),
        ("/static/app.js", "text/javascript"),
        ("/static/style.css", "text/css"),
        ("/api/cameras", "application/json"),
        ("/api/cameras/cam-frame/latest.jpg", "image/jpeg"),
    ):
        answer = get(web_site.port, path)
        assert answer.status == 200, path
        assert answer.headers["content-type"].startswith(kind)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"
    page = get(web_site.port, "/").body
    assert b"<script>" not in page and b'src="/static/app.js"' in page
    assert b"http://" not in page and b"https://" not in page  # no CDN: all served here
    # With the page on, /metrics is still there.
    assert get(web_site.port, "/metrics").status == 200


# -- auth --------------------------------------------------------------------------------------


def _auth(*, protect_metrics: bool) -> HttpAuth:
    config = HttpAuthConfig(
        username=USER,
        password=SecretSource(env="WEB_PASSWORD"),
        token=SecretSource(value=TOKEN),  # type: ignore[arg-type]
        protect_metrics=protect_metrics,
    )
    return HttpAuth.from_config(config, environ={"WEB_PASSWORD": PASSWORD})


def _basic(user: str, password: str) -> str:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Authorization: Basic {encoded}\r\n"


@pytest.mark.parametrize("protect_metrics", [True, False])
def test_auth_protects_everything_but_healthz(protect_metrics: bool) -> None:
    with site(auth=_auth(protect_metrics=protect_metrics)) as started:
        started.put("cam-frame", 1)
        port = started.port
        protected = ["/", "/static/app.js", "/api/cameras", "/api/events"]
        protected += ["/api/cameras/cam-frame/latest.jpg"]
        metrics_status = 401 if protect_metrics else 200
        wrong = [
            "",
            _basic(USER, "wrong"),
            _basic("someone", PASSWORD),
            "Authorization: Bearer wrong\r\n",
            "Authorization: Basic !!notbase64\r\n",
            f"Authorization: Bearer {TOKEN}x\r\n",
        ]
        for path in protected:
            for headers in wrong:
                answer = get(port, path, headers=headers)
                assert answer.status == 401, (path, headers)
                assert answer.headers["www-authenticate"].startswith('Basic realm="edge-facedet"')
                assert answer.body == b"credentials required\n"
            for headers in (_basic(USER, PASSWORD), f"Authorization: Bearer {TOKEN}\r\n"):
                assert get(port, path, headers=headers).status == 200, (path, headers)
        assert get(port, "/metrics").status == metrics_status
        assert get(port, "/metrics", headers=_basic(USER, PASSWORD)).status == 200
        for path in ("/healthz", "/health"):
            assert get(port, path).status == 200
        # An unknown camera answers like a known one until the caller is authenticated, so
        # the 401/404 difference does not list the camera ids.
        assert get(port, "/api/cameras/no-such-camera/latest.jpg").status == 401
        unknown = get(
            port, "/api/cameras/no-such-camera/latest.jpg", headers=_basic(USER, PASSWORD)
        )
        assert unknown.status == 404


def test_auth_config_needs_a_complete_credential() -> None:
    with pytest.raises(ValueError, match="username and password go together"):
        HttpAuthConfig(username="a")
    with pytest.raises(ValueError, match="or token"):
        HttpAuthConfig()
    with pytest.raises(ValueError, match="':'"):
        HttpAuthConfig(username="a:b", password=SecretSource(env="X"))
    token_only = HttpAuth.from_config(
        HttpAuthConfig(token=SecretSource(env="T")), environ={"T": "x"}
    )
    assert 'Bearer realm="edge-facedet"' in dict(token_only.refusal.headers)["WWW-Authenticate"]
    assert token_only.token is not None and token_only.token.hex() not in repr(token_only)


# -- slow clients -------------------------------------------------------------------------------


def test_half_open_clients_and_tile_polling_do_not_stop_metrics_or_healthz() -> None:
    limits = HttpLimits(max_connections=64, request_timeout_s=2.0, protect_s=0.2)
    with site(limits=limits) as started:
        stop = threading.Event()
        seqs = iter(range(1, 1_000_000))

        def poll_tiles() -> None:
            # A browser left open: new frames all the time, tiles asked for as fast as it can.
            while not stop.is_set():
                for camera_id in ("cam-frame", "cam-blur"):
                    started.put(camera_id, next(seqs))
                    with contextlib.suppress(OSError):
                        get(started.port, f"/api/cameras/{camera_id}/latest.jpg", timeout=3)

        poller = threading.Thread(target=poll_tiles, daemon=True)
        poller.start()
        attackers = SlowClients(port=started.port, count=200)
        try:
            time.sleep(0.05)
            slowest = 0.0
            for _ in range(10):
                for path in ("/metrics", "/healthz", "/api/cameras"):
                    began = time.monotonic()
                    answer = get(started.port, path, timeout=3)
                    slowest = max(slowest, time.monotonic() - began)
                    assert answer.status == 200, path
            assert slowest < 1.0, slowest
            assert started.server.open_connections <= limits.max_connections
        finally:
            stop.set()
            attackers.close()
            poller.join(5)
        assert len(attackers.sockets) + attackers.refused >= 150


def test_cameras_a_reload_adds_or_removes_come_and_go_on_the_page() -> None:
    with site() as started:
        added = _camera("late", "frame")
        assert get(started.port, "/api/cameras/late/latest.jpg").status == 404
        started.web.announce(cameras=[added])
        started.web.latest.put(
            frame=_frame("late", 1, picture=True), detections=_faces(1), candidates=_faces(1)
        )
        answer = get(started.port, "/api/cameras/late/latest.jpg")
        assert answer.status == 200 and answer.body[:2] == b"\xff\xd8"
        ids = [c["id"] for c in json.loads(get(started.port, "/api/cameras").body)["cameras"]]
        assert "late" in ids
        started.web.forget_camera("late")
        assert get(started.port, "/api/cameras/late/latest.jpg").status == 404
        ids = [c["id"] for c in json.loads(get(started.port, "/api/cameras").body)["cameras"]]
        assert "late" not in ids
