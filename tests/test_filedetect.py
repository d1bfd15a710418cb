"""`run_detect` (the `edge-facedet detect` command) on real frames written to temporary
images and videos: JSON lines, folders, every-Nth, annotated copies and failure handling;
the image-header reader that caps pixels before decoding. The command's usage errors through
the real CLI are in tests/test_cli.py."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path, PurePath
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest

from edge_facedet.frames import Detections
from edge_facedet.tools.annotate import Annotator, annotated_name, draw_faces
from edge_facedet.tools.detect import EXIT_FAILED, EXIT_NO_INPUT, EXIT_OK, run_detect
from edge_facedet.tools.imageheader import ImageSize, pixel_cap_problem, read_image_size
from edge_facedet.tools.inputs import MediaFile
from tests.support.paths import FACE_VIDEO

if TYPE_CHECKING:
    from numpy.typing import NDArray

CLIP_FRAMES = 5


@pytest.fixture(scope="module")
def model(model_xml: Path) -> Path:
    return model_xml  # FP16-INT8, installed from the shared mirror by tests/conftest.py


@pytest.fixture(scope="module")
def event_frames() -> list[NDArray[np.uint8]]:
    capture = cv2.VideoCapture(str(FACE_VIDEO))
    frames = []
    for _ in range(CLIP_FRAMES):
        ok, frame = capture.read()
        assert ok
        frames.append(np.asarray(frame, np.uint8))
    capture.release()
    return frames


@pytest.fixture
def face_png(tmp_path: Path, event_frames: list[NDArray[np.uint8]]) -> Path:
    path = tmp_path / "in" / "event.png"
    path.parent.mkdir()
    assert cv2.imwrite(str(path), event_frames[0])
    return path


def write_clip(path: Path, frames: list[NDArray[np.uint8]]) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def detect(model: Path, *paths: Path, **options: Any) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_detect(paths=list(paths), model_xml=model, out=out, err=err, **options)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return code, lines, err.getvalue()


def test_one_image(model: Path, face_png: Path) -> None:
    code, lines, err = detect(model, face_png, device="CPU")
    assert (code, err) == (EXIT_OK, "")
    (line,) = lines
    assert (line["file"], line["frame"], line["width"], line["height"]) == (
        str(face_png),
        0,
        640,
        480,
    )
    faces = line["faces"]
    assert len(faces) >= 3
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        assert 0 <= x0 < x1 <= 640
        assert 0 <= y0 < y1 <= 480
        assert face["confidence"] >= 0.5
        # The pixel box is the normalised one scaled, each rounded as documented.
        assert face["box"] == [round(v, 1) for v in face["box"]]
        assert face["box_norm"] == [round(v, 4) for v in face["box_norm"]]
        assert face["confidence"] == round(face["confidence"], 3)
        scaled = np.multiply(face["box_norm"], [640, 480, 640, 480])
        np.testing.assert_allclose(face["box"], scaled, atol=0.1)
    confidences = [f["confidence"] for f in faces]
    assert confidences == sorted(confidences, reverse=True)


def test_threshold_and_min_face_px_filter(model: Path, face_png: Path) -> None:
    _, (everything,), _ = detect(model, face_png, device="CPU", confidence_threshold=0.3)
    _, (strict,), _ = detect(model, face_png, device="CPU", confidence_threshold=0.99)
    heights = sorted(f["box"][3] - f["box"][1] for f in everything["faces"])
    _, (big,), _ = detect(
        model, face_png, device="CPU", confidence_threshold=0.3, min_face_px=int(heights[-1])
    )
    assert len(everything["faces"]) > len(strict["faces"]) >= 1
    assert all(f["confidence"] >= 0.99 for f in strict["faces"])
    assert 1 <= len(big["faces"]) < len(everything["faces"])


@pytest.fixture
def media_folder(tmp_path: Path, event_frames: list[NDArray[np.uint8]]) -> Path:
    folder = tmp_path / "media"
    (folder / "nested").mkdir(parents=True)
    write_clip(folder / "clip.mp4", event_frames)
    assert cv2.imwrite(str(folder / "nested" / "still.bmp"), event_frames[2])
    (folder / "notes.txt").write_text("not media\n")
    return folder


@pytest.mark.parametrize("batch_size", [1, 4])
def test_folder_of_image_and_video(model: Path, media_folder: Path, batch_size: int) -> None:
    # Batch 4 mixes the clip's last frame and the image in one request, and ends partial.
    code, lines, err = detect(model, media_folder, device="CPU", batch_size=batch_size)
    assert (code, err) == (EXIT_OK, "")
    clip, still = str(media_folder / "clip.mp4"), str(media_folder / "nested" / "still.bmp")
    assert [(line["file"], line["frame"]) for line in lines] == [
        *((clip, i) for i in range(CLIP_FRAMES)),
        (still, 0),
    ]
    assert all(len(line["faces"]) >= 3 for line in lines)


def test_every_nth_frame(model: Path, media_folder: Path) -> None:
    code, lines, _ = detect(model, media_folder / "clip.mp4", device="CPU", every_nth=2)
    assert code == EXIT_OK
    assert [line["frame"] for line in lines] == [0, 2, 4]


def test_annotate_writes_boxes_on_copies(model: Path, media_folder: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "annotated"
    code, lines, err = detect(model, media_folder, device="CPU", annotate_dir=out_dir)
    assert (code, err) == (EXIT_OK, "")

    still_in = cv2.imread(str(media_folder / "nested" / "still.bmp"))
    # A BMP's copy becomes a PNG (lossless, so unchanged pixels compare exactly).
    still_out = cv2.imread(str(out_dir / "nested" / "still.png"))
    assert still_in is not None
    assert still_out is not None
    assert still_out.shape == still_in.shape
    changed = np.any(still_out != still_in, axis=2)
    faces = lines[-1]["faces"]
    on_box = np.zeros_like(changed)
    for face in faces:
        x0, y0, x1, y1 = (round(v) for v in face["box"])
        # Each box's outline is drawn: its left edge, down the middle of its height.
        assert changed[(y0 + y1) // 2, max(x0 - 1, 0) : x0 + 2].any()
        on_box[max(y0 - 40, 0) : y1 + 3, max(x0 - 3, 0) : x1 + 40] = True
    assert changed.any()
    assert not changed[~on_box].any(), "pixels changed away from every face"

    clip_out = cv2.VideoCapture(str(out_dir / "clip.mp4"))
    assert clip_out.isOpened()
    if shutil.which("ffprobe"):
        fields = "stream=codec_name,codec_tag_string"
        clip = str(out_dir / "clip.mp4")
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", fields, clip],
            capture_output=True,
            text=True,
            check=True,
        )
        assert probe.stdout.split() == [
            "[STREAM]",
            "codec_name=mpeg4",
            "codec_tag_string=mp4v",
            "[/STREAM]",
        ]
    count, first = 0, None
    while True:
        ok, frame = clip_out.read()
        if not ok:
            break
        first = frame if first is None else first
        count += 1
    clip_out.release()
    assert count == CLIP_FRAMES
    assert first is not None
    assert first.shape == (480, 640, 3)
    # The clip was lossy already: compare the box outline colour, green, not exact pixels.
    face = lines[0]["faces"][0]
    x0, y0, _, y1 = (round(v) for v in face["box"])
    outline = first[(y0 + y1) // 2, x0].astype(int)
    assert outline[1] > 150 and outline[0] < 120 and outline[2] < 120, outline


def test_missing_and_unreadable_files_are_reported_and_skipped(
    model: Path, face_png: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "gone.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\x00not a jpeg" * 100)
    code, lines, err = detect(model, missing, broken, face_png, device="CPU")
    assert code == EXIT_FAILED
    assert str(missing) in err
    assert str(broken) in err
    assert [line["file"] for line in lines] == [str(face_png)]
    assert len(lines[0]["faces"]) >= 3


def test_no_input_files(model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing to see\n")
    code, lines, err = detect(model, empty, tmp_path / "absent.png", device="CPU")
    assert code == EXIT_NO_INPUT
    assert lines == []
    assert "absent.png" in err
    assert "no image or video file" in err


# --- annotation helpers, without a model --------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "is_video", "expected"),
    [
        ("a/b.jpg", False, "a/b.jpg"),
        ("b.JPEG", False, "b.JPEG"),
        ("b.png", False, "b.png"),
        ("nested/still.bmp", False, "nested/still.png"),
        ("scan.tiff", False, "scan.png"),
        ("clip.mkv", True, "clip.mp4"),
        ("odd.jpg", True, "odd.mp4"),  # named like an image, readable only as a video
    ],
)
def test_annotated_name(relative: str, is_video: bool, expected: str) -> None:
    assert annotated_name(PurePath(relative), is_video=is_video) == PurePath(expected)


def one_face(box: tuple[float, float, float, float], confidence: float) -> Detections:
    return Detections(
        boxes_px=np.asarray([box], np.float32),
        boxes_norm=np.asarray([box], np.float32) / 100,
        confidences=np.asarray([confidence], np.float32),
    )


def test_draw_faces_draws_on_a_copy_only_around_the_box() -> None:
    image = np.full((100, 100, 3), 128, np.uint8)
    assert np.array_equal(draw_faces(image=image, faces=Detections.empty()), image)
    drawn = draw_faces(image=image, faces=one_face((40, 50, 60, 80), 0.87))
    assert np.all(image == 128), "the input is left as it was"
    assert tuple(drawn[65, 40]) == (0, 255, 0)  # the box's left edge, green
    assert tuple(drawn[65, 50]) == (128, 128, 128)  # inside the box: untouched
    changed = np.any(drawn != image, axis=2)
    assert not changed[85:].any(), "nothing drawn below the box"


def test_annotator_writes_copies_and_reports_those_it_cannot_write(tmp_path: Path) -> None:
    def frame(name: str, *, is_video: bool) -> SimpleNamespace:
        media = MediaFile(path=Path(name), is_video=is_video, annotated_name=Path(name))
        image = np.zeros((64, 64, 3), np.uint8)
        return SimpleNamespace(media=media, image=image, last=True, fps=10.0)

    annotator = Annotator(tmp_path)
    faces = one_face((10, 10, 40, 40), 0.9)
    assert annotator.add(frame("sub/ok.png", is_video=False), faces) is None
    assert cv2.imread(str(tmp_path / "sub" / "ok.png")) is not None
    assert annotator.add(frame("ok.mp4", is_video=True), faces) is None
    assert (tmp_path / "ok.mp4").stat().st_size > 0
    # A folder where the copy should go: neither an image nor a video can be written there.
    (tmp_path / "taken.png").mkdir()
    (tmp_path / "taken.mp4").mkdir()
    problem = annotator.add(frame("taken.png", is_video=False), faces)
    assert problem == f"cannot write {tmp_path / 'taken.png'}"
    problem = annotator.add(frame("taken.mp4", is_video=True), faces)
    assert problem == f"cannot write {tmp_path / 'taken.mp4'}"


# --- image headers: the pixel cap before decoding, without a model -------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR declaring `width` x `height` (1-bit grey), nothing else."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


@pytest.mark.parametrize(
    ("suffix", "params", "grey", "expected_format"),
    [
        (".png", [], False, "PNG"),
        (".png", [], True, "PNG"),
        (".jpg", [], False, "JPEG"),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], False, "JPEG"),  # SOF2, not SOF0
        (".bmp", [], False, "BMP"),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], False, "WebP"),  # lossy: VP8
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], False, "WebP"),  # lossless: VP8L
        (".tiff", [], False, "TIFF"),
        (".ppm", [], False, "PNM"),
        (".pgm", [], True, "PNM"),
    ],
)
def test_header_size_is_what_opencv_encoded(
    tmp_path: Path, suffix: str, params: list[int], grey: bool, expected_format: str
) -> None:
    # Odd, unequal sizes, so a swapped or off-by-one field shows.
    image = np.zeros((37, 53) if grey else (37, 53, 3), np.uint8)
    ok, encoded = cv2.imencode(suffix, image, params)
    assert ok
    path = tmp_path / f"image{suffix}"
    path.write_bytes(encoded.tobytes())
    assert read_image_size(path) == ImageSize(expected_format, 53, 37)


def test_jpeg_frame_header_is_found_after_large_metadata_segments(tmp_path: Path) -> None:
    ok, encoded = cv2.imencode(".jpg", np.zeros((37, 53, 3), np.uint8))
    assert ok
    data = encoded.tobytes()
    # Two 60 KB APP1 segments (where EXIF and XMP live) between SOI and the frame header.
    app1 = b"\xff\xe1" + struct.pack(">H", 60_002) + bytes(60_000)
    path = tmp_path / "exif.jpg"
    path.write_bytes(data[:2] + app1 + app1 + data[2:])
    assert read_image_size(path) == ImageSize("JPEG", 53, 37)
    assert cv2.imread(str(path)).shape == (37, 53, 3)  # still a JPEG OpenCV reads


def test_headers_of_other_formats_and_odd_layouts(tmp_path: Path) -> None:
    gif = tmp_path / "anim.gif"
    gif.write_bytes(b"GIF89a" + struct.pack("<HH", 65535, 65535) + bytes(10))
    assert read_image_size(gif) == ImageSize("GIF", 65535, 65535)
    top_down = tmp_path / "top_down.bmp"  # a negative height is a top-down bitmap
    top_down.write_bytes(b"BM" + bytes(12) + struct.pack("<Iii", 40, 53, -37) + bytes(30))
    assert read_image_size(top_down) == ImageSize("BMP", 53, 37)
    pnm = tmp_path / "comment.pgm"
    pnm.write_bytes(b"P5\n# a comment 9 9\n53 37\n255\n" + bytes(53 * 37))
    assert read_image_size(pnm) == ImageSize("PNM", 53, 37)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PNG\r\n\x1a\n",  # the signature, no IHDR
        b"\xff\xd8",  # SOI only
        b"\xff\xd8\xff\xe0\x00\x00",  # a segment length of 0
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # a segment running past the end
        b"\xff\xd8" + b"\xff\xe0\x00\x02" * 5000,  # thousands of empty segments
        b"II*\x00\xff\xff\xff\x00",  # TIFF directory offset past the end
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"P6\n53",
        b"\x00\x00\x00\x18ftypmp42",  # a video: not an image format
    ],
)
def test_truncated_or_unknown_headers_give_no_size(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "odd.bin"
    path.write_bytes(data)
    assert read_image_size(path) is None
    assert pixel_cap_problem(path, max_pixels=1) is None  # left to the decoder to report


def test_pixel_cap_refuses_what_a_header_declares(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(30000, 30000))
    problem = pixel_cap_problem(path, max_pixels=50_000_000)
    assert problem is not None
    assert "PNG header declares 30000x30000 pixels (900.0 MP)" in problem
    assert "over the 50 MP cap (--max-megapixels)" in problem
    assert pixel_cap_problem(path, max_pixels=900_000_000) is None  # at the cap: allowed
    digits = tmp_path / "digits.ppm"  # far too many digits to be a size
    digits.write_bytes(b"P6\n" + b"9" * 400 + b" 1\n255\n")
    assert pixel_cap_problem(digits, max_pixels=50_000_000) is not None
