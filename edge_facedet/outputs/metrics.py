"""Every Prometheus metric of the service, defined once, on a registry of its own.

Labels come only from camera ids in the configuration, never from URLs, so no credential
can reach a metrics page.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from edge_facedet.outputs.httpserver import DROP_REASONS

# Inference and pipeline latencies are milliseconds-scale on an edge box; the default
# Prometheus buckets (5 ms .. 10 s) would put nearly everything in the first two.
INFERENCE_BUCKETS = (
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
)
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
    2.0,
    5.0,
)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
# Face heights an operator acts on: the model card's accuracy is for faces >= 64 px, and a
# recognition step wants 80-112 px; below 32 px a face is a smudge.
FACE_HEIGHT_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
CONFIDENCE_BUCKETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
EVENT_TYPES = ("new", "update", "end")
SNAPSHOT_RESULTS = ("published", "failed", "dropped")
MAIN_SNAPSHOT_RESULTS = ("main", "fallback", "down", "evicted", "behind", "fov_mismatch")
MAIN_STREAM_STATES = ("connecting", "streaming", "reconnecting", "stopped")
SNAPSHOT_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
RELOAD_RESULTS = ("ok", "invalid", "failed")


class Metrics:
    """The service's metrics. Create one per service instance (tests create several)."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames_captured = Counter(
            "edge_facedet_frames_captured",
            "Frames read from the camera (grabbed).",
            ["camera"],
            registry=r,
        )
        self.frames_skipped = Counter(
            "edge_facedet_frames_skipped",
            "Frames grabbed but not decoded, to hold the camera's detect_fps.",
            ["camera"],
            registry=r,
        )
        self.frames_dropped = Counter(
            "edge_facedet_frames_dropped",
            "Due frames not inferred because the camera's previous frame still waited for a free "
            "infer request (dropped before BGR conversion and resize).",
            ["camera"],
            registry=r,
        )
        self.frames_stale = Counter(
            "edge_facedet_frames_stale",
            "Due frames not detected because the reader was more than max_lag_s behind the "
            "live stream (the host decodes slower than the camera sends).",
            ["camera"],
            registry=r,
        )
        self.frames_gated = Counter(
            "edge_facedet_frames_gated",
            "Due frames not detected because motion gating found nothing that could change the "
            "answer: no motion, no faces or open tracks, no recheck due.",
            ["camera"],
            registry=r,
        )
        self.frames_inferred = Counter(
            "edge_facedet_frames_inferred",
            "Frames that went through the detector.",
            ["camera"],
            registry=r,
        )
        self.faces_detected = Counter(
            "edge_facedet_faces_detected",
            "Faces reported after thresholds and filters.",
            ["camera"],
            registry=r,
        )
        self.camera_reconnects = Counter(
            "edge_facedet_camera_reconnects",
            "Reconnect attempts after a camera fault.",
            ["camera"],
            registry=r,
        )
        self.mqtt_published = Counter(
            "edge_facedet_mqtt_published", "MQTT messages handed to the broker.", registry=r
        )
        self.mqtt_dropped = Counter(
            "edge_facedet_mqtt_dropped",
            "MQTT messages dropped because the bounded outbox was full (oldest first).",
            registry=r,
        )
        self.inference_seconds = Histogram(
            "edge_facedet_inference_seconds",
            "Time from submitting a batch to its result.",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "edge_facedet_batch_size",
            "Frames per submitted batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.pipeline_latency_seconds = Histogram(
            "edge_facedet_pipeline_latency_seconds",
            "Capture to the frame's results handled (before the publish policy and the outbox).",
            ["camera"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.camera_up = Gauge(
            "edge_facedet_camera_up",
            "1 while the camera delivers frames, else 0.",
            ["camera"],
            registry=r,
        )
        self.camera_lag_seconds = Gauge(
            "edge_facedet_camera_lag_seconds",
            "How far the reader is behind the live stream, from the stream's timestamps "
            "(RTSP, RTMP, UDP, TCP; 0 for HTTP, files, devices, streams without them).",
            ["camera"],
            registry=r,
        )
        self.inflight_requests = Gauge(
            "edge_facedet_inflight_requests", "Infer requests currently running.", registry=r
        )
        self.mqtt_connected = Gauge(
            "edge_facedet_mqtt_connected", "1 while connected to the MQTT broker.", registry=r
        )
        self.build = Info(
            "edge_facedet_build", "Version of edge-facedet and its runtimes.", registry=r
        )
        self.device = Info(
            "edge_facedet_device",
            "Inference device: as requested and as selected by OpenVINO.",
            registry=r,
        )
        # Which share of the cameras this process runs (config/shard.py): index 0 of 1
        # when not sharded. The cost is in 720p main-stream cameras (sharding.py).
        self.shard = Info(
            "edge_facedet_shard",
            "This process's shard: its index and the shard count (0 and 1: not sharded).",
            registry=r,
        )
        self.shard_cameras = Gauge(
            "edge_facedet_shard_cameras", "Enabled cameras this shard runs.", registry=r
        )
        self.shard_cost = Gauge(
            "edge_facedet_shard_cost",
            "Estimated cost of this shard's cameras, in 720p main-stream cameras at "
            "detect_fps 5 (the camera's `cost:` where given).",
            registry=r,
        )
        self.config_reloads = Counter(
            "edge_facedet_config_reloads",
            "Configuration reloads (SIGHUP, `systemctl reload`) by result: ok (applied), "
            "invalid (the file was refused; the old configuration runs on), failed (applying "
            "raised; see the log).",
            ["result"],
            registry=r,
        )
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result=result)
        self.http = HttpMetrics(registry=r)
        self.tracks = TrackMetrics(registry=r)
        self.main_stream = MainStreamMetrics(registry=r)

    def register_camera(self, camera_id: str) -> None:
        """Create every per-camera series at zero, so dashboards see cameras before frames."""
        for family in (
            self.frames_captured,
            self.frames_skipped,
            self.frames_dropped,
            self.frames_stale,
            self.frames_gated,
            self.frames_inferred,
            self.faces_detected,
            self.camera_reconnects,
        ):
            family.labels(camera=camera_id)
        self.pipeline_latency_seconds.labels(camera=camera_id)
        self.camera_up.labels(camera=camera_id).set(0)
        self.camera_lag_seconds.labels(camera=camera_id).set(0)
        self.tracks.register_camera(camera_id)

    def unregister_camera(self, camera_id: str) -> None:
        """Remove a camera's series (a reload removed it): no stale `camera_up` stays."""
        families = (
            self.frames_captured,
            self.frames_skipped,
            self.frames_dropped,
            self.frames_stale,
            self.frames_gated,
            self.frames_inferred,
            self.faces_detected,
            self.camera_reconnects,
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

    def __init__(self, *, registry: CollectorRegistry) -> None:
        r = registry
        self.open = Gauge(
            "edge_facedet_tracks_open", "Confirmed face tracks open now.", ["camera"], registry=r
        )
        self.started = Counter(
            "edge_facedet_tracks_started",
            "Face tracks confirmed (each made one `new` event).",
            ["camera"],
            registry=r,
        )
        self.events = Counter(
            "edge_facedet_events_published",
            "Track events handed to the outputs, by type (new, update, end).",
            ["camera", "type"],
            registry=r,
        )
        self.snapshots = Counter(
            "edge_facedet_snapshots",
            "Snapshots by result: published (rendered and handed to the outputs), failed "
            "(rendering or writing failed; see the log), dropped (the snapshot queue was full).",
            ["camera", "result"],
            registry=r,
        )
        self.snapshot_bytes = Counter(
            "edge_facedet_snapshot_bytes",
            "Bytes of snapshot JPEGs handed to the outputs.",
            ["camera"],
            registry=r,
        )
        self.face_height = Histogram(
            "edge_facedet_face_height_pixels",
            "Height of each reported face in pixels of the camera's frame: faces too small to "
            "use show here before anyone complains.",
            ["camera"],
            buckets=FACE_HEIGHT_BUCKETS,
            registry=r,
        )
        self.face_confidence = Histogram(
            "edge_facedet_face_confidence",
            "Confidence of each reported face.",
            ["camera"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )

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

    def __init__(self, *, registry: CollectorRegistry) -> None:
        r = registry
        self.state_info = Gauge(
            "edge_facedet_main_stream_state",
            "1 for the main-stream reader's current state (connecting, streaming, "
            "reconnecting, stopped), 0 for the others.",
            ["camera", "state"],
            registry=r,
        )
        self.buffered_bytes = Gauge(
            "edge_facedet_main_stream_buffered_bytes",
            "Compressed main-stream packets held for snapshots, in bytes.",
            ["camera"],
            registry=r,
        )
        self.packets_dropped = Counter(
            "edge_facedet_main_stream_packets_dropped",
            "Main-stream packets not kept: before the first keyframe, or in a GOP longer than "
            "the buffer's bounds.",
            ["camera"],
            registry=r,
        )
        self.reconnects = Counter(
            "edge_facedet_main_stream_reconnects",
            "Main-stream reconnect attempts after a fault.",
            ["camera"],
            registry=r,
        )
        self.offset_seconds = Gauge(
            "edge_facedet_main_stream_offset_seconds",
            "The main stream's arrival of a moment minus the substream's, as found by the "
            "latest main-stream snapshot (positive: the main stream arrives later).",
            ["camera"],
            registry=r,
        )
        self.snapshots = Counter(
            "edge_facedet_snapshots_main",
            "Snapshots of main-stream cameras by outcome: main (taken from the main stream), "
            "fallback (the main stream's render failed after the event said main; the "
            "substream's picture was used), down, evicted, behind, fov_mismatch (the main "
            "stream could not serve it when asked; the event says detect).",
            ["camera", "result"],
            registry=r,
        )
        self.latency_seconds = Histogram(
            "edge_facedet_main_snapshot_latency_seconds",
            "From the face's capture to its main-stream JPEG.",
            ["camera"],
            buckets=SNAPSHOT_LATENCY_BUCKETS,
            registry=r,
        )
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

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self.dropped_total = Counter(
            "edge_facedet_http_connections_dropped",
            "HTTP connections closed without a normal answer: over the connection cap "
            "(over_cap), replaced by a newer one after waiting longest for a request "
            "(evicted), past a read or write deadline (timeout), over a request limit or "
            "malformed (bad_request).",
            ["reason"],
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.dropped_total.labels(reason=reason)
        self.open = Gauge(
            "edge_facedet_http_connections",
            "Open connections to the HTTP endpoint (capped).",
            registry=registry,
        )

    def dropped(self, reason: str) -> None:
        self.dropped_total.labels(reason=reason).inc()

    def connections(self, count: int) -> None:
        self.open.set(count)
