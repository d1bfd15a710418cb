"""The HTTP endpoint: Prometheus `/metrics`, `/healthz` and the web page, from a thread of its own.

A thread keeps scrapes off the event loop (rendering hundreds of series is CPU work) and
keeps metrics answering even if the loop were wedged, which is when they matter most. The
server itself (httpserver.py) bounds connections, request sizes and time; this module is
only the routes: the metrics and health ones here, the web page's (`web`, webroutes.py), and
the credentials check in front of all but `/healthz` when `auth` is set (httpauth.py).
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder, gzip_accepted

from edge_facedet.outputs.httpmessages import Request, Response
from edge_facedet.outputs.httpserver import HttpEvents, HttpLimits, HttpServer
from edge_facedet.outputs.webroutes import WebRoutes

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import CollectorRegistry

    from edge_facedet.outputs.httpauth import HttpAuth
    from edge_facedet.outputs.web import WebOutput

log = logging.getLogger(__name__)

METRICS_PATHS = ("/", "/metrics")
HEALTH_PATHS = ("/healthz", "/health")
LIVE_PATH = "/livez"
NOT_FOUND = Response(status=HTTPStatus.NOT_FOUND, body=b"not found: try /metrics or /healthz\n")


class MetricsServer:
    """Serves `/metrics` (Prometheus text format) and `/healthz` (200 healthy, 503 not).

    With `web`, also the web page at `/` and its API (webroutes.py); without, `/` is the
    metrics, as it always was. With `auth`, every path but `/healthz` asks for credentials
    (`/metrics` too unless `auth.protect_metrics` is off).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        live: Callable[[], bool] | None = None,
        limits: HttpLimits | None = None,
        events: HttpEvents | None = None,
        web: WebOutput | None = None,
        auth: HttpAuth | None = None,
    ) -> None:
        self._registry = registry
        self._health = health
        self._live = live
        self.web = None if web is None else WebRoutes(web=web, health=health)
        if web is not None and auth is None and not _loopback(host):
            log.warning(
                "the web page on %s:%d has no metrics.auth: anyone who reaches it sees the "
                "cameras whose snapshots are on",
                host,
                port,
            )
        routes = self._routes(auth)
        # With credentials set, an unknown path asks for them too: a 404 answered to anyone
        # would tell which camera ids exist (their image paths answer 401).
        not_found: Callable[[Request], Response] = self._fallback
        if auth is not None:
            not_found = auth.guard(not_found)
        self._server = HttpServer(
            host=host,
            port=port,
            routes=routes,
            not_found=not_found,
            limits=limits,
            events=events,
            thread_name="metrics-http",
        )

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def open_connections(self) -> int:
        return self._server.open_connections

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def _routes(self, auth: HttpAuth | None) -> dict[str, Callable[[Request], Response]]:
        metrics: dict[str, Callable[[Request], Response]] = dict.fromkeys(
            METRICS_PATHS, self._metrics
        )
        others: dict[str, Callable[[Request], Response]] = {}
        if self.web is not None:
            del metrics["/"]
            others = self.web.routes()
        if auth is not None:
            others = {path: auth.guard(handler) for path, handler in others.items()}
            if auth.protect_metrics:
                metrics = {path: auth.guard(handler) for path, handler in metrics.items()}
        # /healthz and /livez stay open: systemd, a load balancer or a probe has no secret.
        return {
            **metrics,
            **others,
            **dict.fromkeys(HEALTH_PATHS, self._healthz),
            LIVE_PATH: self._livez,
        }

    def _metrics(self, request: Request) -> Response:
        # What prometheus_client's own WSGI app does: the format the scraper accepts
        # (text 0.0.4 or OpenMetrics), `name[]` to select series, gzip when asked for.
        encoder, content_type = choose_encoder(request.header("accept"))
        registry: Any = self._registry
        names = parse_qs(request.query).get("name[]")
        if names:
            registry = registry.restricted_registry(names)
        body = encoder(registry)
        headers: tuple[tuple[str, str], ...] = ()
        if gzip_accepted(request.header("accept-encoding")):
            body = gzip.compress(body)
            headers = (("Content-Encoding", "gzip"),)
        return Response(status=HTTPStatus.OK, body=body, content_type=content_type, headers=headers)

    def _fallback(self, request: Request) -> Response:
        """A path no fixed route has: a camera's tile (cameras come and go with reloads),
        else 404."""
        if self.web is not None:
            tile = self.web.camera_tile(request)
            if tile is not None:
                return tile
        return NOT_FOUND

    def _livez(self, request: Request) -> Response:
        """200 unless the process is wedged: the systemd watchdog's rule (frames flow, or no
        camera is streaming), so a liveness probe restarts a stuck detector but not a node
        whose cameras are all down (/healthz is 503 then: not ready, yet nothing to restart)."""
        alive = True if self._live is None else self._live()
        body = b"alive\n" if alive else b"stuck: cameras stream but no frame is inferred\n"
        return Response(
            status=HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE, body=body
        )

    def _healthz(self, request: Request) -> Response:
        healthy, detail = self._health()
        body = json.dumps({"healthy": healthy, **detail}, separators=(",", ":")).encode()
        status = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
        return Response(status=status, body=body, content_type="application/json")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
