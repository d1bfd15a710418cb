"""The readers' pure helpers, without threads: the detect grid, the file pacer, log throttling."""

from __future__ import annotations

import math

import pytest

from edge_facedet.logthrottle import every_power_of_two
from edge_facedet.sources.grid import DetectGrid
from edge_facedet.sources.pacer import FALLBACK_FILE_FPS, MAX_PACING_LAG_S, FilePacer, usable_fps

FRAME_S = 0.04  # 25 fps


def due_indices(grid: DetectGrid, clocks: list[float]) -> list[int]:
    return [i for i, clock in enumerate(clocks) if grid.is_due(clock)]


# -- the detect grid ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (0.0, list(range(0, 50, 5))),
        # Points at 0.1 + k x 0.2 s: the first frame at or after each, and the first frame.
        (0.5, [0, *range(3, 50, 5)]),
    ],
)
def test_grid_picks_the_first_frame_at_or_after_each_point(
    phase: float, expected: list[int]
) -> None:
    # A media clock summed frame by frame, as a file's is: 5 x 0.04 falls short of 0.2.
    clocks = [0.0]
    for _ in range(49):
        clocks.append(clocks[-1] + FRAME_S)
    assert due_indices(DetectGrid(detect_fps=5.0, phase=phase), clocks) == expected


def test_grid_holds_the_average_rate_whatever_the_arrival_jitter() -> None:
    # 25 fps arrivals with up to 30 ms of jitter, 10 s: 50 due frames at 5/s, one per period.
    clocks = [100.0 + i * FRAME_S + (i * 7 % 4) * 0.01 for i in range(250)]
    due = [clocks[i] for i in due_indices(DetectGrid(detect_fps=5.0), clocks)]
    assert len(due) == 50
    assert all(math.floor((c - 100.0) / 0.2 + 1e-6) == k for k, c in enumerate(due))


def test_grid_resumes_on_the_next_point_after_a_gap_instead_of_bursting() -> None:
    grid = DetectGrid(detect_fps=5.0)
    assert grid.is_due(0.0)
    assert not grid.is_due(0.1)
    # A two-second gap (a reconnect): one frame is due, then the grid's rhythm again.
    assert grid.is_due(2.13)
    assert not grid.is_due(2.17)
    assert grid.is_due(2.21)


def test_grid_rejects_a_rate_or_phase_out_of_range() -> None:
    with pytest.raises(ValueError, match="detect_fps"):
        DetectGrid(detect_fps=0.0)
    with pytest.raises(ValueError, match="phase"):
        DetectGrid(detect_fps=5.0, phase=1.0)


# -- the file pacer ----------------------------------------------------------------------


def test_a_file_read_as_fast_as_possible_is_never_paced_but_keeps_its_media_clock() -> None:
    pacer = FilePacer(realtime=False)
    pacer.start(declared_fps=25.0, now=1000.0)
    clocks = []
    for _ in range(3):
        assert pacer.wait_s(now=1000.0) == 0.0
        clocks.append(pacer.next_frame())
    assert clocks == pytest.approx([0.0, 0.04, 0.08])


def test_a_realtime_file_waits_for_each_frame_on_its_media_clock() -> None:
    pacer = FilePacer(realtime=True)
    pacer.start(declared_fps=25.0, now=1000.0)
    assert pacer.wait_s(now=1000.0) == 0.0
    assert pacer.next_frame() == 0.0
    assert pacer.wait_s(now=1000.01) == pytest.approx(0.03)
    assert pacer.wait_s(now=1000.05) == 0.0  # late by 10 ms: read at once


def test_a_realtime_file_far_behind_restarts_its_pacing_instead_of_racing_the_backlog() -> None:
    pacer = FilePacer(realtime=True)
    pacer.start(declared_fps=25.0, now=1000.0)
    pacer.next_frame()
    assert pacer.wait_s(now=1000.0 + MAX_PACING_LAG_S + 1.0) == 0.0  # far behind: restart
    pacer.next_frame()
    # The next frame is due one frame interval after the restart, not at once.
    assert pacer.wait_s(now=1000.0 + MAX_PACING_LAG_S + 1.0) == pytest.approx(FRAME_S)


def test_the_media_clock_runs_on_across_sessions() -> None:
    pacer = FilePacer(realtime=True)
    pacer.start(declared_fps=25.0, now=1000.0)
    pacer.next_frame()
    pacer.next_frame()
    pacer.start(declared_fps=10.0, now=2000.0)  # reopened (loop), a different rate
    assert pacer.wait_s(now=2000.0) == 0.0
    assert pacer.next_frame() == pytest.approx(0.08)
    assert pacer.next_frame() == pytest.approx(0.18)


@pytest.mark.parametrize("declared", [math.nan, 0.0, 0.05, 5000.0, math.inf])
def test_an_unusable_declared_rate_falls_back(declared: float) -> None:
    assert usable_fps(declared) == FALLBACK_FILE_FPS


def test_a_usable_declared_rate_is_kept() -> None:
    assert usable_fps(29.97) == 29.97


# -- log throttling ----------------------------------------------------------------------


def test_every_power_of_two_logs_the_first_occurrences_then_fewer() -> None:
    logged = [n for n in range(1, 70) if every_power_of_two(n)]
    assert logged == [1, 2, 4, 8, 16, 32, 64]
    assert every_power_of_two(0)  # a zero-based attempt number logs its first attempt
