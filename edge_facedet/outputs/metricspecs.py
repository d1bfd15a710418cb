"""Every Prometheus metric family of the service as data: kind, name, HELP text, labels, buckets.

outputs/metrics.py builds them: each table belongs to one class there (`Metrics` and its
parts), whose attributes are the table's keys. A registry lists its families in the order
they were created, so a table's order is the metrics page's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from prometheus_client import Counter, Gauge, Histogram, Info

if TYPE_CHECKING:
    from collections.abc import Mapping

    from prometheus_client import CollectorRegistry

__all__ = [
    "HTTP_METRICS",
    "KINDS",
    "MAIN_STREAM_METRICS",
    "SERVICE_METRICS",
    "TRACK_METRICS",
    "MetricSpec",
    "build",
]

Metric: TypeAlias = Counter | Gauge | Histogram | Info
KINDS: tuple[type[Metric], ...] = (Counter, Gauge, Histogram, Info)

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
SNAPSHOT_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

CAMERA = ("camera",)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family, as prometheus_client is asked to create it."""

    kind: type[Metric]
    name: str
    documentation: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None
    """Histograms only; None: prometheus_client's default buckets."""

    def __post_init__(self) -> None:
        if self.buckets is not None and self.kind is not Histogram:
            raise ValueError(f"{self.name}: only a histogram has buckets")

    def create(self, *, registry: CollectorRegistry) -> Metric:
        if self.buckets is not None:
            return Histogram(
                self.name, self.documentation, self.labels, buckets=self.buckets, registry=registry
            )
        return self.kind(self.name, self.documentation, self.labels, registry=registry)


def build(owner: object, table: Mapping[str, MetricSpec], *, registry: CollectorRegistry) -> None:
    """Create the table's families on `registry`, in table order, as attributes of `owner`."""
    for attribute, spec in table.items():
        setattr(owner, attribute, spec.create(registry=registry))


SERVICE_METRICS: Mapping[str, MetricSpec] = {
    "frames_captured": MetricSpec(
        Counter,
        "edge_facedet_frames_captured",
        "Frames read from the camera (grabbed).",
        CAMERA,
    ),
    "frames_skipped": MetricSpec(
        Counter,
        "edge_facedet_frames_skipped",
        "Frames grabbed but not decoded, to hold the camera's detect_fps.",
        CAMERA,
    ),
    "frames_dropped": MetricSpec(
        Counter,
        "edge_facedet_frames_dropped",
        "Due frames not inferred because the camera's previous frame still waited for a free "
        "infer request (dropped before BGR conversion and resize).",
        CAMERA,
    ),
    "frames_stale": MetricSpec(
        Counter,
        "edge_facedet_frames_stale",
        "Due frames not detected because the reader was more than max_lag_s behind the "
        "live stream (the host decodes slower than the camera sends).",
        CAMERA,
    ),
    "frames_gated": MetricSpec(
        Counter,
        "edge_facedet_frames_gated",
        "Due frames not detected because motion gating found nothing that could change the "
        "answer: no motion, no faces or open tracks, no recheck due.",
        CAMERA,
    ),
    "frames_inferred": MetricSpec(
        Counter,
        "edge_facedet_frames_inferred",
        "Frames that went through the detector.",
        CAMERA,
    ),
    "faces_detected": MetricSpec(
        Counter,
        "edge_facedet_faces_detected",
        "Faces reported after thresholds and filters.",
        CAMERA,
    ),
    "camera_reconnects": MetricSpec(
        Counter,
        "edge_facedet_camera_reconnects",
        "Reconnect attempts after a camera fault.",
        CAMERA,
    ),
    "mqtt_published": MetricSpec(
        Counter, "edge_facedet_mqtt_published", "MQTT messages handed to the broker."
    ),
    "mqtt_dropped": MetricSpec(
        Counter,
        "edge_facedet_mqtt_dropped",
        "MQTT messages dropped because the bounded outbox was full (oldest first).",
    ),
    "inference_seconds": MetricSpec(
        Histogram,
        "edge_facedet_inference_seconds",
        "Time from submitting a batch to its result.",
        buckets=INFERENCE_BUCKETS,
    ),
    "batch_size": MetricSpec(
        Histogram,
        "edge_facedet_batch_size",
        "Frames per submitted batch.",
        buckets=BATCH_BUCKETS,
    ),
    "pipeline_latency_seconds": MetricSpec(
        Histogram,
        "edge_facedet_pipeline_latency_seconds",
        "Capture to the frame's results handled (before the publish policy and the outbox).",
        CAMERA,
        buckets=LATENCY_BUCKETS,
    ),
    "camera_up": MetricSpec(
        Gauge,
        "edge_facedet_camera_up",
        "1 while the camera delivers frames, else 0.",
        CAMERA,
    ),
    "camera_lag_seconds": MetricSpec(
        Gauge,
        "edge_facedet_camera_lag_seconds",
        "How far the reader is behind the live stream, from the stream's timestamps "
        "(RTSP, RTMP, UDP, TCP; 0 for HTTP, files, devices, streams without them).",
        CAMERA,
    ),
    "inflight_requests": MetricSpec(
        Gauge, "edge_facedet_inflight_requests", "Infer requests currently running."
    ),
    "mqtt_connected": MetricSpec(
        Gauge, "edge_facedet_mqtt_connected", "1 while connected to the MQTT broker."
    ),
    "build": MetricSpec(Info, "edge_facedet_build", "Version of edge-facedet and its runtimes."),
    "device": MetricSpec(
        Info,
        "edge_facedet_device",
        "Inference device: as requested and as selected by OpenVINO.",
    ),
    # Which share of the cameras this process runs (config/shard.py): index 0 of 1
    # when not sharded. The cost is in 720p main-stream cameras (sharding.py).
    "shard": MetricSpec(
        Info,
        "edge_facedet_shard",
        "This process's shard: its index and the shard count (0 and 1: not sharded).",
    ),
    "shard_cameras": MetricSpec(
        Gauge, "edge_facedet_shard_cameras", "Enabled cameras this shard runs."
    ),
    "shard_cost": MetricSpec(
        Gauge,
        "edge_facedet_shard_cost",
        "Estimated cost of this shard's cameras, in 720p main-stream cameras at "
        "detect_fps 5 (the camera's `cost:` where given).",
    ),
    "config_reloads": MetricSpec(
        Counter,
        "edge_facedet_config_reloads",
        "Configuration reloads (SIGHUP, `systemctl reload`) by result: ok (applied), "
        "invalid (the file was refused; the old configuration runs on), failed (applying "
        "raised; see the log).",
        ("result",),
    ),
}

TRACK_METRICS: Mapping[str, MetricSpec] = {
    "open": MetricSpec(
        Gauge, "edge_facedet_tracks_open", "Confirmed face tracks open now.", CAMERA
    ),
    "started": MetricSpec(
        Counter,
        "edge_facedet_tracks_started",
        "Face tracks confirmed (each made one `new` event).",
        CAMERA,
    ),
    "events": MetricSpec(
        Counter,
        "edge_facedet_events_published",
        "Track events handed to the outputs, by type (new, update, end).",
        ("camera", "type"),
    ),
    "snapshots": MetricSpec(
        Counter,
        "edge_facedet_snapshots",
        "Snapshots by result: published (rendered and handed to the outputs), failed "
        "(rendering or writing failed; see the log), dropped (the snapshot queue was full), "
        "superseded (a newer best face of the same event took its place in the queue).",
        ("camera", "result"),
    ),
    "snapshot_bytes": MetricSpec(
        Counter,
        "edge_facedet_snapshot_bytes",
        "Bytes of snapshot JPEGs handed to the outputs.",
        CAMERA,
    ),
    "face_height": MetricSpec(
        Histogram,
        "edge_facedet_face_height_pixels",
        "Height of each reported face in pixels of the camera's frame: faces too small to "
        "use show here before anyone complains.",
        CAMERA,
        buckets=FACE_HEIGHT_BUCKETS,
    ),
    "face_confidence": MetricSpec(
        Histogram,
        "edge_facedet_face_confidence",
        "Confidence of each reported face.",
        CAMERA,
        buckets=CONFIDENCE_BUCKETS,
    ),
}

MAIN_STREAM_METRICS: Mapping[str, MetricSpec] = {
    "state_info": MetricSpec(
        Gauge,
        "edge_facedet_main_stream_state",
        "1 for the main-stream reader's current state (connecting, streaming, "
        "reconnecting, stopped), 0 for the others.",
        ("camera", "state"),
    ),
    "buffered_bytes": MetricSpec(
        Gauge,
        "edge_facedet_main_stream_buffered_bytes",
        "Compressed main-stream packets held for snapshots, in bytes.",
        CAMERA,
    ),
    "packets_dropped": MetricSpec(
        Counter,
        "edge_facedet_main_stream_packets_dropped",
        "Main-stream packets not kept: before the first keyframe, or in a GOP longer than "
        "the buffer's bounds.",
        CAMERA,
    ),
    "reconnects": MetricSpec(
        Counter,
        "edge_facedet_main_stream_reconnects",
        "Main-stream reconnect attempts after a fault.",
        CAMERA,
    ),
    "offset_seconds": MetricSpec(
        Gauge,
        "edge_facedet_main_stream_offset_seconds",
        "The main stream's arrival of a moment minus the substream's, as found by the "
        "latest main-stream snapshot (positive: the main stream arrives later).",
        CAMERA,
    ),
    "snapshots": MetricSpec(
        Counter,
        "edge_facedet_snapshots_main",
        "Snapshots of main-stream cameras by outcome: main (taken from the main stream), "
        "fallback (the main stream's render failed after the event said main; the "
        "substream's picture was used), down, evicted, behind, fov_mismatch (the main "
        "stream could not serve it when asked; the event says detect).",
        ("camera", "result"),
    ),
    "latency_seconds": MetricSpec(
        Histogram,
        "edge_facedet_main_snapshot_latency_seconds",
        "From the face's capture to its main-stream JPEG.",
        CAMERA,
        buckets=SNAPSHOT_LATENCY_BUCKETS,
    ),
}

HTTP_METRICS: Mapping[str, MetricSpec] = {
    "dropped_total": MetricSpec(
        Counter,
        "edge_facedet_http_connections_dropped",
        "HTTP connections closed without a normal answer: over the connection cap "
        "(over_cap), replaced by a newer one after waiting longest for a request "
        "(evicted), past a read or write deadline (timeout), over a request limit or "
        "malformed (bad_request).",
        ("reason",),
    ),
    "open": MetricSpec(
        Gauge,
        "edge_facedet_http_connections",
        "Open connections to the HTTP endpoint (capped).",
    ),
}
