"""The service's main streams: which cameras get one, their readers, rings and registry.

runtime/snapshots.py wires it with two calls: `MainStreamSet.build` (the model for the
refining step compiled in a worker thread) and `stop`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from edge_facedet.backoff import Backoff
from edge_facedet.config.camera_urls import display_url, with_credentials
from edge_facedet.config.mainstream import main_stream_active
from edge_facedet.outputs.snapshots.mainframe import MainStreams
from edge_facedet.outputs.snapshots.refine import SyncFaceDetector
from edge_facedet.sources.mainstream import MainStreamReader
from edge_facedet.sources.packetring import PacketRing

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from edge_facedet.config import CameraConfig
    from edge_facedet.config.mainstream import MainStreamConfig
    from edge_facedet.outputs.metrics import MainStreamMetrics

__all__ = ["MainStreamSet"]

log = logging.getLogger(__name__)

READER_JOIN_S = 2.0


class MainStreamSet:
    """The main-stream readers (threads) and the registry the snapshot worker uses."""

    def __init__(self, *, streams: MainStreams, readers: Sequence[MainStreamReader]) -> None:
        self.streams = streams
        self._readers = tuple(readers)

    @classmethod
    async def build(
        cls,
        *,
        cameras: Sequence[CameraConfig],
        metrics: MainStreamMetrics,
        model_xml: Path,
        cache_dir: Path | None,
        environ: Mapping[str, str],
        credentials_dir: Path | None,
    ) -> MainStreamSet | None:
        """Readers started for every camera whose snapshots come from its main stream;
        None when no camera's do."""
        chosen = [camera for camera in cameras if main_stream_active(camera)]
        if not chosen:
            return None
        # Compiling blocks for up to seconds: not on the loop.
        finder = await asyncio.to_thread(SyncFaceDetector, model_xml=model_xml, cache_dir=cache_dir)
        rings: dict[str, tuple[PacketRing, MainStreamConfig]] = {}
        readers = []
        for camera in chosen:
            settings = camera.main_stream
            ring = PacketRing(max_bytes=settings.max_bytes, max_seconds=settings.max_seconds)
            rings[camera.id] = (ring, settings)
            metrics.register_camera(camera.id)
            url = with_credentials(
                camera, url=camera.url, environ=environ, credentials_dir=credentials_dir
            )
            readers.append(
                MainStreamReader(
                    camera_id=camera.id,
                    url=url,
                    display_url=display_url(camera),
                    ring=ring,
                    read_timeout_s=camera.read_timeout_s,
                    backoff=Backoff(base=camera.reconnect_initial_s, cap=camera.reconnect_max_s),
                    watcher=metrics,
                )
            )
            log.info(
                "camera %s: snapshots from the main stream %s (detection on the substream)",
                camera.id,
                display_url(camera),
            )
        streams = MainStreams(
            cameras=rings,
            finder=finder,
            watcher=metrics,
        )
        for reader in readers:
            reader.start()
        return cls(streams=streams, readers=readers)

    async def stop(self) -> None:
        """Tell every reader to stop; wait for them within one shared deadline."""
        for reader in self._readers:
            reader.stop()

        def join_all() -> list[str]:
            deadline = time.monotonic() + READER_JOIN_S
            return [
                reader.camera_id
                for reader in self._readers
                if not reader.join(max(0.0, deadline - time.monotonic()))
            ]

        stuck = await asyncio.to_thread(join_all)
        if stuck:
            log.warning("main-stream readers still in a blocking read at exit: %s", stuck)
