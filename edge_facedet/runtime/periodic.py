"""The service's timers: tracks of silent cameras ended, systemd's watchdog and STATUS=."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_facedet.outputs.pipeline import ResultPipeline
    from edge_facedet.systemd import SystemdNotifier

__all__ = ["expire_tracks", "feed_watchdog", "report_to_systemd"]

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 5.0
# Tracks of a camera whose frames stopped coming (none for a whole interval) are ended by
# this timer; a camera that delivers frames ends them itself, on its next frame after
# max_age_s (outputs/tracks.py's `expire`).
TRACK_EXPIRY_INTERVAL_S = 1.0


async def expire_tracks(pipeline: ResultPipeline) -> None:
    while True:
        await asyncio.sleep(TRACK_EXPIRY_INTERVAL_S)
        pipeline.expire_tracks()


async def report_to_systemd(
    *, notifier: SystemdNotifier, pipeline: ResultPipeline, window_s: float
) -> None:
    """Feeds the systemd watchdog while frames flow, and refreshes STATUS=."""
    interval = min(notifier.watchdog_interval_s or STATUS_INTERVAL_S, STATUS_INTERVAL_S)
    while True:
        if pipeline.pipeline_alive(window_s=window_s):
            notifier.watchdog()
        else:
            log.error("cameras are streaming but no frame reached the detector recently")
        notifier.status(pipeline.status_line())
        await asyncio.sleep(interval)


async def feed_watchdog(notifier: SystemdNotifier) -> None:
    """Nothing to flow is alive by the watchdog policy (architecture.md)."""
    interval = min(notifier.watchdog_interval_s or STATUS_INTERVAL_S, STATUS_INTERVAL_S)
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
