"""Every Prometheus metric of the service, on a registry of its own.

The families themselves (names, HELP texts, labels, buckets) are the tables of
metricspecs.py; the classes here build them and create each camera's series.

Labels come only from camera ids in the configuration, never from URLs, so no credential
can reach a metrics page.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from edge_facedet.outputs import metricspecs
from edge_facedet.outputs.httpserver import DROP_REASONS

EVENT_TYPES = ("new", "update", "end")
SNAPSHOT_RESULTS = ("published", "failed", "dropped", "superseded")
MAIN_SNAPSHOT_RESULTS = ("main", "fallback", "down", "evicted", "behind", "fov_mismatch")
MAIN_STREAM_STATES = ("connecting", "streaming", "reconnecting", "stopped")
RELOAD_RESULTS = ("ok", "invalid", "failed")


class Metrics:
    """The service's metrics. Create one per service instance (tests create several)."""

    # Built from metricspecs.SERVICE_METRICS (same names, same order).
    frames_captured: Counter
    frames_skipped: Counter
    frames_dropped: Counter
    frames_stale: Counter
    frames_gated: Counter
    frames_inferred: Counter
    faces_detected: Counter
    camera_reconnects: Counter
    mqtt_published: Counter
    mqtt_dropped: Counter
    inference_seconds: Histogram
    batch_size: Histogram
    pipeline_latency_seconds: Histogram
    camera_up: Gauge
    camera_lag_seconds: Gauge
    inflight_requests: Gauge
    mqtt_connected: Gauge
    build: Info
    device: Info
    shard: Info
    shard_cameras: Gauge
    shard_cost: Gauge
    config_reloads: Counter

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        metricspecs.build(self, metricspecs.SERVICE_METRICS, registry=self.registry)
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result=result)
        self.http = HttpMetrics(registry=self.registry)
        self.tracks = TrackMetrics(registry=self.registry)
        self.main_stream = MainStreamMetrics(registry=self.registry)

    def register_camera(self, camera_id: str) -> None:
        """Create every per-camera series at zero, so dashboards see cameras before frames."""
        for family in self._camera_counters():
            family.labels(camera=camera_id)
        self.pipeline_latency_seconds.labels(camera=camera_id)
        self.camera_up.labels(camera=camera_id).set(0)
        self.camera_lag_seconds.labels(camera=camera_id).set(0)
        self.tracks.register_camera(camera_id)

    def _camera_counters(self) -> tuple[Counter, ...]:
        """The counters labelled by camera alone."""
        return (
            self.frames_captured,
            self.frames_skipped,
            self.frames_dropped,
            self.frames_stale,
            self.frames_gated,
            self.frames_inferred,
            self.faces_detected,
            self.camera_reconnects,
        )

    def unregister_camera(self, camera_id: str) -> None:
        """Remove a camera's series (a reload removed it): no stale `camera_up` stays."""
        families = (
            *self._camera_counters(),
            self.pipeline_latency_seconds,
            self.camera_up,
            self.camera_lag_seconds,
            self.tracks.open,
            self.tracks.started,
            self.tracks.snapshot_bytes,
            self.tracks.face_height,
            self.tracks.face_confidence,
        )
        for family in families:
            with contextlib.suppress(KeyError):
                family.remove(camera_id)
        for kind in EVENT_TYPES:
            with contextlib.suppress(KeyError):
                self.tracks.events.remove(camera_id, kind)
        for result in SNAPSHOT_RESULTS:
            with contextlib.suppress(KeyError):
                self.tracks.snapshots.remove(camera_id, result)


class TrackMetrics:
    """Face tracks, their events and snapshots, and what the camera's faces look like."""

    # Built from metricspecs.TRACK_METRICS (same names, same order).
    open: Gauge
    started: Counter
    events: Counter
    snapshots: Counter
    snapshot_bytes: Counter
    face_height: Histogram
    face_confidence: Histogram

    def __init__(self, *, registry: CollectorRegistry) -> None:
        metricspecs.build(self, metricspecs.TRACK_METRICS, registry=registry)

    def register_camera(self, camera_id: str) -> None:
        self.open.labels(camera=camera_id).set(0)
        self.started.labels(camera=camera_id)
        self.snapshot_bytes.labels(camera=camera_id)
        self.face_height.labels(camera=camera_id)
        self.face_confidence.labels(camera=camera_id)
        for kind in EVENT_TYPES:
            self.events.labels(camera=camera_id, type=kind)
        for result in SNAPSHOT_RESULTS:
            self.snapshots.labels(camera=camera_id, result=result)


class MainStreamMetrics:
    """Main streams demuxed for snapshots (sources/mainstream.py) and the snapshots taken
    from them (outputs/snapshots/mainframe.py). Thread-safe: readers and the snapshot
    worker report from their own threads."""

    # Built from metricspecs.MAIN_STREAM_METRICS (same names, same order).
    state_info: Gauge
    buffered_bytes: Gauge
    packets_dropped: Counter
    reconnects: Counter
    offset_seconds: Gauge
    snapshots: Counter
    latency_seconds: Histogram

    def __init__(self, *, registry: CollectorRegistry) -> None:
        metricspecs.build(self, metricspecs.MAIN_STREAM_METRICS, registry=registry)
        self._dropped_seen: dict[str, int] = {}

    def register_camera(self, camera_id: str) -> None:
        for state in MAIN_STREAM_STATES:
            self.state_info.labels(camera=camera_id, state=state).set(0)
        for result in MAIN_SNAPSHOT_RESULTS:
            self.snapshots.labels(camera=camera_id, result=result)
        self.buffered_bytes.labels(camera=camera_id).set(0)
        self.packets_dropped.labels(camera=camera_id)
        self.reconnects.labels(camera=camera_id)
        self.offset_seconds.labels(camera=camera_id).set(0)
        self.latency_seconds.labels(camera=camera_id)

    # MainStreamWatcher (sources/mainstream.py)
    def state(self, camera_id: str, state: object) -> None:
        current = str(getattr(state, "value", state))
        for name in MAIN_STREAM_STATES:
            self.state_info.labels(camera=camera_id, state=name).set(int(name == current))

    def buffered(self, camera_id: str, *, bytes_held: int, packets_dropped: int) -> None:
        self.buffered_bytes.labels(camera=camera_id).set(bytes_held)
        # The ring counts over its life; the counter takes what is new.
        new = packets_dropped - self._dropped_seen.get(camera_id, 0)
        if new > 0:
            self.packets_dropped.labels(camera=camera_id).inc(new)
            self._dropped_seen[camera_id] = packets_dropped

    def reconnected(self, camera_id: str) -> None:
        self.reconnects.labels(camera=camera_id).inc()

    # MainSnapshotWatcher (outputs/snapshots/mainframe.py)
    def snapshot(self, camera_id: str, result: str) -> None:
        self.snapshots.labels(camera=camera_id, result=result).inc()

    def offset(self, camera_id: str, seconds: float) -> None:
        self.offset_seconds.labels(camera=camera_id).set(seconds)

    def latency(self, camera_id: str, seconds: float) -> None:
        self.latency_seconds.labels(camera=camera_id).observe(seconds)


class HttpMetrics:
    """The HTTP endpoint's connections (outputs/httpserver.py reports them: `HttpEvents`)."""

    # Built from metricspecs.HTTP_METRICS (same names, same order).
    dropped_total: Counter
    open: Gauge

    def __init__(self, *, registry: CollectorRegistry) -> None:
        metricspecs.build(self, metricspecs.HTTP_METRICS, registry=registry)
        for reason in DROP_REASONS:
            self.dropped_total.labels(reason=reason)

    def dropped(self, reason: str) -> None:
        self.dropped_total.labels(reason=reason).inc()

    def connections(self, count: int) -> None:
        self.open.set(count)
