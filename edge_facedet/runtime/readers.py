"""The camera readers' lifetimes: made, started together, stopped within one deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from edge_facedet.config import detect_open_url, display_detect_url
from edge_facedet.sources.reader import CameraReader, CameraStatus, ReaderSettings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from edge_facedet.config import CameraConfig
    from edge_facedet.inference.detector import OpenVinoDetector
    from edge_facedet.inference.slots import LatestFrameSlot
    from edge_facedet.outputs.metrics import Metrics
    from edge_facedet.outputs.pipeline import ResultPipeline

__all__ = ["READER_JOIN_S", "ReaderGroup", "stop_readers"]

log = logging.getLogger(__name__)

# Readers blocked in a network read get this long to notice the stop; they are daemon
# threads, so one stuck in FFmpeg cannot hold the exit beyond it.
READER_JOIN_S = 2.0


class ReaderGroup:
    """The camera readers (threads): started together, stopped once with one deadline."""

    def __init__(
        self, *, metrics: Metrics, environ: Mapping[str, str], credentials_dir: Path | None
    ) -> None:
        self._metrics = metrics
        self._environ = environ
        self._credentials_dir = credentials_dir
        self._readers: list[CameraReader] = []
        self._stopped = False

    def __len__(self) -> int:
        return len(self._readers)

    def add(
        self,
        camera: CameraConfig,
        *,
        phase: float,
        detector: OpenVinoDetector,
        sink: LatestFrameSlot,
        pipeline: ResultPipeline,
    ) -> CameraReader:
        """A reader for `camera` feeding `sink`, kept in the group (not started)."""
        loop = asyncio.get_running_loop()
        holder: list[CameraReader] = []

        def report_status(status: CameraStatus) -> None:
            # Reader threads report here; the pipeline lives on the loop. A reader a reload
            # replaced may still report: only the camera's current reader is heard.
            def handle() -> None:
                if holder and self.current(camera.id) is holder[0]:
                    pipeline.handle_status(status)

            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(handle)

        reader = CameraReader(
            settings=ReaderSettings.from_camera(
                camera,
                # The substream when one is configured: decoding dominates the cost per
                # camera, and the network input is 448x448 whatever is read.
                url=detect_open_url(
                    camera, environ=self._environ, credentials_dir=self._credentials_dir
                ),
                input_size=detector.input_size,
                detect_phase=phase,
                activity=pipeline.activity(camera.id),
            ),
            sink=sink,
            on_status=report_status,
            metrics=self._metrics,
        )
        holder.append(reader)
        log.info(
            "camera %s: %s at %.1f detections/s",
            camera.id,
            display_detect_url(camera),
            camera.detect_fps,
        )
        self._readers.append(reader)
        return reader

    def current(self, camera_id: str) -> CameraReader | None:
        """The camera's running reader (None once a reload removed it)."""
        for reader in self._readers:
            if reader.status.camera_id == camera_id:
                return reader
        return None

    async def stop_some(self, camera_ids: Sequence[str]) -> None:
        """Stop and forget the readers of `camera_ids` (a reload), within one deadline."""
        leaving = [r for r in self._readers if r.status.camera_id in set(camera_ids)]
        if not leaving:
            return
        self._readers = [r for r in self._readers if r not in leaving]
        await stop_readers(leaving)

    def start(self) -> None:
        for reader in self._readers:
            reader.start()

    async def stop(self) -> None:
        """Tell every reader to stop and wait for them, once, within one shared deadline."""
        if self._stopped:
            return
        self._stopped = True
        await stop_readers(self._readers)


async def stop_readers(readers: Sequence[CameraReader]) -> None:
    """Tell `readers` to stop and wait for them within one shared deadline (off the loop)."""
    for reader in readers:
        reader.stop()

    def join_all() -> list[str]:
        deadline = time.monotonic() + READER_JOIN_S
        return [
            reader.status.camera_id
            for reader in readers
            if not reader.join(max(0.0, deadline - time.monotonic()))
        ]

    stuck = await asyncio.to_thread(join_all)
    if stuck:
        log.warning("camera readers still in a blocking read: %s", ", ".join(stuck))
