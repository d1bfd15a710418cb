"""Whether a camera's main stream shows its substream's view: decided once per connection.

The frame of a snapshot's moment is compared with the substream picture (fov.view_match:
a coarse whole-picture similarity, less however much better a crop fits). One picture
decides nothing: a face filling a close-up looks alike cropped or not, and the first
seconds of a connection mislead (a substream joined mid-GOP decodes damaged pictures, a
reader catching up stamps its frames late, so the main frame found is of another moment).
The mean of a connection's scores decides: that the views match once VIEW_CHECKS scores
pass on average; that they differ once they fail on average over `span_s` at least
(`main_stream.view_check_s`).
Until then a snapshot uses the main picture while the mean so far passes.
A main stream that shows another view is warned about; with `main_stream.map` its
snapshots still use it, mapped; without, that connection's snapshots stay on the substream.
Thread-safe: asked on the loop (`refuses`), decided on the worker thread (`check`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from edge_facedet.outputs.snapshots.fov import FOV_MIN_SIMILARITY

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["VIEW_CHECKS", "ViewCheck"]

log = logging.getLogger(__name__)

VIEW_CHECKS = 3
"""Scores before a connection's views are decided."""


class ViewCheck:
    """One camera's view check; `explicit`: the operator gave `main_stream.map`; `span_s`:
    seconds of failing scores before the views are called different."""

    def __init__(
        self,
        *,
        camera_id: str,
        explicit: bool,
        span_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._camera_id = camera_id
        self._span_s = span_s
        self._clock = clock
        self._explicit = explicit
        self._lock = threading.Lock()
        self._decided = 0
        """The connection whose views were decided (0: none yet)."""
        self._matches = True
        self._checking = 0
        self._scores: list[float] = []
        """The scores of connection `_checking` so far, while undecided."""
        self._since = 0.0
        """When its first score came."""

    def refuses(self, connection: int) -> bool:
        """Whether snapshots of `connection` stay on the substream (decided: another view,
        and no explicit mapping)."""
        with self._lock:
            return self._decided == connection and not self._matches and not self._explicit

    def check(self, connection: int, *, score: Callable[[], float]) -> bool:
        """Whether this snapshot may use the main picture; `score()` (called only while
        undecided) is its frame's view_match with the substream picture."""
        with self._lock:
            if self._decided == connection:
                return self._matches or self._explicit
            if self._checking != connection:
                self._checking, self._scores, self._since = connection, [], self._clock()
        value = score()
        with self._lock:
            self._scores.append(value)
            mean = sum(self._scores) / len(self._scores)
            matches = mean >= FOV_MIN_SIMILARITY
            long_enough = matches or self._clock() - self._since >= self._span_s
            decided = len(self._scores) >= VIEW_CHECKS and long_enough
            if decided:
                self._decided, self._matches = connection, matches
        self._report(value, mean=mean, matches=matches, decided=decided)
        return matches or self._explicit

    def _report(self, score: float, *, mean: float, matches: bool, decided: bool) -> None:
        camera_id = self._camera_id
        if not decided:
            log.info(
                "camera %s: main and substream views compared (similarity %.2f, mean %.2f "
                "of %d): this snapshot uses the %s",
                camera_id,
                score,
                mean,
                len(self._scores),
                "main stream" if matches or self._explicit else "substream",
            )
        elif matches:
            log.info(
                "camera %s: the main stream shows the substream's view (similarity %.2f)",
                camera_id,
                mean,
            )
        else:
            action = (
                "using main_stream.map as configured"
                if self._explicit
                else "snapshots stay on the substream for this connection; set "
                "main_stream.map to the substream's view inside the main picture, or "
                "main_stream.enabled: false"
            )
            log.warning(
                "camera %s: the main stream's picture does not match the substream's "
                "(similarity %.2f < %.2f): cropped, letterboxed or another camera? %s",
                camera_id,
                mean,
                FOV_MIN_SIMILARITY,
                action,
            )
