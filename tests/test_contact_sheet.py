"""The contact sheet's reusable pieces: the grid, the drawing, the tracks read from events.

The service run itself is benchmarks/contact_sheet.py's job (minutes, a broker, the model);
these prove that what it draws and counts follows from the events it was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from benchmarks.contact_sheet import (
    BACKGROUND,
    MISSING,
    SheetLayout,
    Tile,
    new_after_camera_down,
    render_sheet,
    summarise_tracks,
    suspected_splits,
    tile_for,
)

if TYPE_CHECKING:
    from pathlib import Path

LAYOUT = SheetLayout(columns=3, cell_px=20, label_lines=2, line_px=6, pad_px=2, title_px=10)


def test_layout_is_row_major_and_cells_never_overlap() -> None:
    cells = [LAYOUT.origin(i) for i in range(7)]
    assert cells[0] == (2, 12)
    assert cells[1] == (24, 12)  # same row, one pitch to the right
    assert cells[3] == (2, 12 + 20 + 12 + 2)  # next row: picture, two label lines, pad
    width, height = LAYOUT.size(7)
    assert (width, height) == (2 + 3 * 22, 12 + 3 * 34)
    boxes = [(x, y, x + 20, y + 32) for x, y in cells]
    for i, a in enumerate(boxes):
        assert a[2] <= width and a[3] <= height
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_an_empty_sheet_still_has_room_for_its_title() -> None:
    width, height = LAYOUT.size(0)
    assert width > 0 and height > LAYOUT.title_px


def _solid(colour: tuple[int, int, int], *, width: int, height: int) -> Any:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = colour
    return image


def test_each_picture_lands_centred_in_its_cell_in_order_and_a_missing_one_is_crossed() -> None:
    red, green = (0, 0, 255), (0, 255, 0)
    tiles = [
        Tile(_solid(red, width=10, height=10), ("a",)),
        Tile(_solid(green, width=40, height=20), ("b",)),  # wide: scaled to 20x10, centred
        Tile(None, ("c",)),
    ]
    sheet = render_sheet(tiles=tiles, title="", layout=LAYOUT)
    assert sheet.shape[:2] == LAYOUT.size(3)[::-1]
    (x0, y0), (x1, y1), (x2, y2) = (LAYOUT.origin(i) for i in range(3))
    assert tuple(sheet[y0 + 10, x0 + 10]) == red
    assert tuple(sheet[y1 + 10, x1 + 10]) == green
    assert tuple(sheet[y1 + 2, x1 + 10]) == BACKGROUND  # above the wide picture
    assert tuple(sheet[y2 + 10, x2 + 10]) == MISSING  # the cross
    assert tuple(sheet[y2 + 3, x2 + 10]) == BACKGROUND


def _event(
    kind: str, number: int, *, start: str, last: str, end: str | None = None, box: Any = None
) -> dict[str, Any]:
    return {
        "type": kind,
        "event_id": f"sheet-cam-0123abcd-t{number}",
        "start_ts": f"2026-01-01T00:00:{start}Z",
        "last_ts": f"2026-01-01T00:00:{last}Z",
        "end_ts": None if end is None else f"2026-01-01T00:00:{end}Z",
        "frames_seen": 4,
        "box": box or [100.0, 100.0, 140.0, 150.0],
        "best": {"confidence": 0.91, "height_px": 50.0},
        "end_reason": None if kind != "end" else "lost",
    }


def test_tracks_come_in_start_order_numbered_ids_in_number_order(tmp_path: Path) -> None:
    events = [
        _event("new", 10, start="01.000", last="01.200"),
        _event("new", 2, start="01.000", last="01.200"),
        _event("new", 9, start="00.500", last="00.700"),
        _event("end", 10, start="01.000", last="03.000", end="05.000"),
    ]
    tracks = summarise_tracks(events, snapshot_dir=tmp_path)
    assert [t.short_id for t in tracks] == ["t9", "t2", "t10"]
    t10 = tracks[2]
    assert (t10.start_s, t10.last_s, t10.end_s) == (0.5, 2.5, 4.5)  # from the latest event
    assert t10.end_reason == "lost"
    assert tracks[0].end_s == float("inf")  # no end event yet


def test_each_track_gets_the_files_named_for_its_event_and_extra_files_are_flagged(
    tmp_path: Path,
) -> None:
    events = [_event("new", n, start="00.000", last="00.200") for n in (1, 2, 3)]
    for name in ("20260101T000000.100000Z-sheet-cam-0123abcd-t1.jpg",
                 "20260101T000000.100000Z-sheet-cam-0123abcd-t2.jpg",
                 "20260101T000001.100000Z-sheet-cam-0123abcd-t2.jpg",
                 "20260101T000000.100000Z-sheet-cam-0123abcd-t12.jpg"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    by_id = {t.short_id: t for t in summarise_tracks(events, snapshot_dir=tmp_path)}
    assert [p.name[-7:] for p in by_id["t1"].snapshots] == ["-t1.jpg"]  # not t12's file
    assert len(by_id["t2"].snapshots) == 2
    assert by_id["t3"].snapshots == ()
    assert "2 files!" in tile_for(by_id["t2"]).lines[0]
    assert tile_for(by_id["t3"]).image is None


@pytest.mark.parametrize(
    ("start", "box", "suspected"),
    [
        ("01.500", [110.0, 100.0, 150.0, 150.0], True),  # while t1 coasts, next to it
        ("03.500", [110.0, 100.0, 150.0, 150.0], False),  # after t1 ended
        ("01.500", [500.0, 100.0, 540.0, 150.0], False),  # far away
        ("01.500", [100.0, 100.0, 250.0, 300.0], False),  # four times its size
    ],
)
def test_a_split_is_suspected_only_near_a_track_that_is_open_but_unseen(
    tmp_path: Path, start: str, box: list[float], *, suspected: bool
) -> None:
    events = [
        _event("new", 1, start="00.000", last="00.200"),
        _event("end", 1, start="00.000", last="01.000", end="03.000"),
        _event("new", 2, start=start, last=start, box=box),
    ]
    splits = suspected_splits(summarise_tracks(events, snapshot_dir=tmp_path))
    assert [(s.before, s.after) for s in splits] == ([("t1", "t2")] if suspected else [])


def test_news_after_the_first_camera_down_end_are_reported() -> None:
    down = {**_event("end", 1, start="00.000", last="01.000", end="01.100")}
    down["end_reason"] = "camera_down"
    events = [_event("new", 1, start="00.000", last="00.200"), down,
              _event("new", 2, start="01.050", last="01.090")]  # fmt: skip
    assert new_after_camera_down(events) == ["t2"]
    assert new_after_camera_down(events[:2]) == []
