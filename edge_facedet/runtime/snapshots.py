"""The snapshot wiring: the directory checked first, then the worker and the main streams."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from edge_facedet.config.mainstream import main_stream_active
from edge_facedet.outputs.snapshots.store import SnapshotStore
from edge_facedet.outputs.snapshots.worker import SnapshotWorker

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from edge_facedet.config import CameraConfig
    from edge_facedet.config.snapshots import SnapshotDirConfig
    from edge_facedet.outputs.metrics import MainStreamMetrics
    from edge_facedet.outputs.snapshots.mainwiring import MainStreamSet
    from edge_facedet.outputs.snapshots.worker import SnapshotResult

__all__ = ["open_snapshot_store", "start_snapshots"]


async def open_snapshot_store(settings: SnapshotDirConfig | None) -> SnapshotStore | None:
    """The snapshot directory, checked before anything starts (SnapshotDirError)."""
    if settings is None:
        return None
    store = SnapshotStore(config=settings)
    await asyncio.to_thread(store.start)  # checks, scans and prunes: never on the loop
    return store


async def start_snapshots(
    cameras: Sequence[CameraConfig],
    *,
    store: SnapshotStore | None,
    on_result: Callable[[SnapshotResult], None],
    model_xml: Path,
    cache_dir: Path | None,
    metrics: MainStreamMetrics,
    environ: Mapping[str, str],
    credentials_dir: Path | None,
) -> tuple[SnapshotWorker, MainStreamSet | None]:
    """The snapshot worker, and the main-stream readers of the cameras whose snapshots come
    from their main stream while they are detected on their substream (started)."""
    main_streams = None
    if any(main_stream_active(camera) for camera in cameras):
        # Imported only here: the main-stream path loads PyAV (17 MB resident).
        from edge_facedet.outputs.snapshots.mainwiring import MainStreamSet  # noqa: PLC0415

        main_streams = await MainStreamSet.build(
            cameras=cameras,
            metrics=metrics,
            model_xml=model_xml,
            cache_dir=cache_dir,
            environ=environ,
            credentials_dir=credentials_dir,
        )
    worker = SnapshotWorker(
        store=store,
        on_result=on_result,
        main_streams=None if main_streams is None else main_streams.streams,
    )
    return worker, main_streams
