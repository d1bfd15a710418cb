"""The web page and its JSON API, as routes of the service's HTTP server (http.py).

| path | answer |
|---|---|
| `/`, `/index.html`, `/static/app.js`, `/static/style.css` | the page (webpage/, in the package) |
| `/api/cameras` | node status and every camera (api_cameras.schema.json) |
| `/api/cameras/<id>/latest.jpg` | the camera's tile (tiles.py); 404 when its images are off |
| `/api/events` | the last events across cameras, newest first (api_events.schema.json) |
| `/api/events/snapshot.jpg?event_id=<id>` | an event's snapshot, while it is kept in memory |

Handlers run in the HTTP thread and read what `WebOutput` keeps; nothing here touches the
event loop. Every answer carries a Content-Security-Policy without inline script, nosniff
and no-referrer; API answers and images are `no-store` (pictures of people stay out of
browser and proxy caches).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from edge_facedet import __version__
from edge_facedet.config.snapshots import SnapshotMode
from edge_facedet.outputs.httpmessages import Request, Response
from edge_facedet.outputs.tiles import TileEncoder, TileLimits

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_facedet.outputs.latest import LatestFrame
    from edge_facedet.outputs.web import WebOutput

__all__ = ["SECURITY_HEADERS", "WebRoutes"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
JSON = "application/json"
JPEG = "image/jpeg"


def _answer(
    status: HTTPStatus, body: bytes, *, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    return Response(status=status, body=body, content_type=content_type, headers=SECURITY_HEADERS)


def _json(value: Any) -> Response:
    body = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    return _answer(HTTPStatus.OK, body, content_type=JSON)


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Camera ids are letters, digits, _ and - (config's ID_PATTERN): the path needs no quoting.
_TILE_PATH = re.compile(r"/api/cameras/([A-Za-z0-9][A-Za-z0-9_-]{0,63})/latest\.jpg")


class WebRoutes:
    """The page's routes over a `WebOutput`; `health` is the service's /healthz figures."""

    def __init__(
        self,
        *,
        web: WebOutput,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        tile_limits: TileLimits | None = None,
    ) -> None:
        self._web = web
        self._health = health
        self.tiles = TileEncoder(cameras=web.cameras, limits=tile_limits)
        folder = resources.files("edge_facedet.outputs").joinpath("webpage")
        self._assets = {
            path: _answer(HTTPStatus.OK, folder.joinpath(name).read_bytes(), content_type=kind)
            for path, (name, kind) in ASSETS.items()
        }

    def routes(self) -> dict[str, Callable[[Request], Response]]:
        routes: dict[str, Callable[[Request], Response]] = dict.fromkeys(self._assets, self._asset)
        routes["/api/cameras"] = self._cameras
        routes["/api/events"] = self._events
        routes["/api/events/snapshot.jpg"] = self._event_snapshot
        return routes

    def camera_tile(self, request: Request) -> Response | None:
        """`/api/cameras/<id>/latest.jpg` of any camera the page knows now (a reload may add
        one after the routes were made); None for any other path."""
        match = _TILE_PATH.fullmatch(request.path)
        if match is None or match.group(1) not in self._web.cameras:
            return None
        return self._tile(match.group(1))

    # -- handlers --------------------------------------------------------------------------

    def _asset(self, request: Request) -> Response:
        return self._assets[request.path]

    def _cameras(self, request: Request) -> Response:
        healthy, detail = self._health()
        node = {
            "id": self._web.node_id,
            "version": __version__,
            "healthy": healthy,
            "frames_flowing": bool(detail.get("frames_flowing", False)),
            "cameras_streaming": int(detail.get("cameras_streaming", 0)),
            "ts": _utc(datetime.now(timezone.utc)),
        }
        cameras = [self._camera(camera_id) for camera_id in self._web.cameras]
        return _json({"node": node, "cameras": cameras})

    def _camera(self, camera_id: str) -> dict[str, Any]:
        config = self._web.cameras[camera_id]
        raw = self._web.state(camera_id)
        state: dict[str, Any] = json.loads(raw) if raw is not None else {}
        latest = self._web.latest.get(camera_id)
        mode = self._web.images(camera_id)
        return {
            "id": camera_id,
            "name": config.name or camera_id,
            "state": state.get("state", "starting"),
            "fps_in": state.get("fps_in", 0.0),
            "fps_out": state.get("fps_out", 0.0),
            "last_error": state.get("last_error"),
            "reconnects": state.get("reconnects", 0),
            "open_tracks": state.get("open_tracks", 0),
            "frame": None if latest is None else {"width": latest.width, "height": latest.height},
            "seq": None if latest is None else latest.seq,
            "capture_ts": None if latest is None else _utc(latest.capture_time),
            "frames": 0 if latest is None else latest.frames,
            "faces": 0 if latest is None else latest.faces,
            "faces_total": 0 if latest is None else latest.faces_total,
            "boxes": [] if latest is None else _boxes(latest),
            "images": mode.value,
            "image": self._has_image(camera_id, mode=mode, latest=latest),
        }

    def _has_image(self, camera_id: str, *, mode: SnapshotMode, latest: LatestFrame | None) -> bool:
        if mode is SnapshotMode.OFF:
            return False
        if mode is SnapshotMode.CROP:
            return self._web.camera_snapshot(camera_id) is not None
        return latest is not None and latest.picture is not None

    def _events(self, request: Request) -> Response:
        events = []
        for kept in reversed(self._web.events()):
            event = json.loads(kept.payload)
            event_id = str(event.get("event_id", ""))
            has_picture = self._web.event_snapshot(event_id) is not None
            event["snapshot_url"] = (
                f"/api/events/snapshot.jpg?event_id={quote(event_id, safe='')}"
                if has_picture
                else None
            )
            events.append(event)
        return _json({"events": events})

    def _event_snapshot(self, request: Request) -> Response:
        event_id = parse_qs(request.query).get("event_id", [""])[0]
        jpeg = self._web.event_snapshot(event_id) if event_id else None
        if jpeg is None:
            return _answer(HTTPStatus.NOT_FOUND, b"no snapshot kept for this event\n")
        return _answer(HTTPStatus.OK, jpeg, content_type=JPEG)

    def _tile(self, camera_id: str) -> Response:
        mode = self._web.images(camera_id)
        if mode is SnapshotMode.OFF:
            return _answer(
                HTTPStatus.NOT_FOUND, b"images are off for this camera (metadata only)\n"
            )
        if mode is SnapshotMode.CROP:
            jpeg = self._web.camera_snapshot(camera_id)
            if jpeg is None:
                return _answer(HTTPStatus.NOT_FOUND, b"no face snapshot yet\n")
            return _answer(HTTPStatus.OK, jpeg, content_type=JPEG)
        latest = self._web.latest.get(camera_id)
        if latest is None:
            return _answer(HTTPStatus.NOT_FOUND, b"no frame yet\n")
        jpeg = self.tiles.tile(latest)
        if jpeg is None:
            busy = _answer(HTTPStatus.SERVICE_UNAVAILABLE, b"busy encoding; try again\n")
            return Response(
                status=busy.status,
                body=busy.body,
                content_type=busy.content_type,
                headers=(*busy.headers, ("Retry-After", "1")),
            )
        return _answer(HTTPStatus.OK, jpeg, content_type=JPEG)


def _boxes(latest: LatestFrame) -> list[dict[str, Any]]:
    return [
        {"box_norm": [round(value, 4) for value in box], "confidence": round(confidence, 3)}
        for box, confidence in zip(
            latest.boxes_norm.tolist(), latest.confidences.tolist(), strict=True
        )
    ]
