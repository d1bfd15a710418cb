"""The offline commands through the real CLI (`edge-facedet detect|eval|model info` in a
subprocess): usage errors are one line and exit 2, `detect --annotate` never writes over an
input, and an image declaring a huge size is refused from its header, unread, while the
files beside it are still processed."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

from tests.support.paths import FACE_VIDEO
from tests.support.service import edge_facedet_command, run_cli

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(scope="module")
def face_frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(FACE_VIDEO))
    frames = []
    for _ in range(6):
        ok, frame = capture.read()
        assert ok, FACE_VIDEO
        frames.append(frame)
    capture.release()
    return frames


@pytest.fixture
def inputs(tmp_path: Path, face_frames: list[np.ndarray]) -> Path:
    """A folder with a face image (event.png) and a 6-frame clip (clip.mp4)."""
    folder = tmp_path / "in"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "event.png"), face_frames[0])
    height, width = face_frames[0].shape[:2]
    fourcc = cv2.VideoWriter.fourcc(*"mp4v")
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), fourcc, 10.0, (width, height))
    for frame in face_frames:
        writer.write(frame)
    writer.release()
    return folder


def detect(model_root: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("detect", "--models-dir", model_root, "--device", "CPU", *args)


def one_line_error(completed: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command's stderr, checked to be exactly one line, no traceback, naming `needles`."""
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


# --- usage errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--every-nth", "0"], "--every-nth"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "100000"], "--batch-size"),
        (["--device", "GARBAGE"], "--device"),
        (["--threshold", "nan"], "--threshold"),
        (["--min-face-px", "-1"], "--min-face-px"),
        (["--max-megapixels", "0"], "--max-megapixels"),
    ],
)
def test_bad_detect_arguments_are_one_usage_line(
    model_root: Path, inputs: Path, arguments: list[str], named: str
) -> None:
    # With the model installed and a real input, so only the argument can be at fault.
    completed = run_cli(
        "detect", "--models-dir", model_root, inputs / "event.png", *arguments
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""
    one_line_error(completed, f"argument {named}:")


def test_eval_and_model_info_check_their_arguments_too(model_root: Path, tmp_path: Path) -> None:
    completed = run_cli("model", "info", "--models-dir", model_root, "--batch-size", "0")
    assert completed.returncode == 2, completed.stderr
    one_line_error(completed, "argument --batch-size:")
    completed = run_cli(
        "eval", "--images", tmp_path, "--gt", tmp_path / "gt.txt", "--models-dir", model_root,
        "--device", "GPU.x",
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    one_line_error(completed, "argument --device:")


def test_a_device_this_host_lacks_is_one_usage_line(model_root: Path, inputs: Path) -> None:
    import openvino as ov

    if "NPU" in ov.Core().available_devices:
        pytest.skip("this host has an NPU")
    completed = run_cli(
        "detect", "--models-dir", model_root, "--device", "NPU", inputs / "event.png"
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""
    one_line_error(completed, "--device NPU: cannot load")
    completed = run_cli("model", "info", "--models-dir", model_root, "--device", "NPU")
    assert completed.returncode == 2, completed.stderr
    one_line_error(completed, "--device NPU: cannot load")


def test_annotate_onto_a_file_or_an_uncreatable_folder(
    model_root: Path, inputs: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "taken.txt"
    a_file.write_text("not a folder\n")
    # Under a regular file nothing can be created, whoever runs the test (root included).
    for target, reason in ((a_file, "not a folder"), (a_file / "out", "cannot create")):
        completed = detect(model_root, inputs / "event.png", "--annotate", target)
        assert completed.returncode == 2, completed.stderr
        assert completed.stdout == ""
        one_line_error(completed, f"--annotate {target}:", reason)
    assert a_file.read_text() == "not a folder\n"


# --- --annotate never writes over an input ------------------------------------------------


def test_annotating_into_the_input_folder_is_refused_and_inputs_stay(
    model_root: Path, inputs: Path
) -> None:
    before = {path.name: path.read_bytes() for path in inputs.iterdir()}
    assert frame_count(inputs / "clip.mp4") == 6
    completed = detect(model_root, inputs, "--annotate", inputs)
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""  # refused before any file is processed
    one_line_error(completed, f"--annotate {inputs}:", "would overwrite an input")
    assert {path.name: path.read_bytes() for path in inputs.iterdir()} == before
    # The video annotated in place alone (its copy is clip.mp4 beside it), through a path
    # spelt differently: compared resolved, not as text.
    spelt = inputs / ".." / inputs.name
    completed = detect(model_root, inputs / "clip.mp4", "--annotate", spelt)
    assert completed.returncode == 2, completed.stderr
    one_line_error(completed, "clip.mp4", "would overwrite an input")
    assert frame_count(inputs / "clip.mp4") == 6


def test_a_copy_that_is_a_link_to_an_input_is_refused(
    model_root: Path, inputs: Path, tmp_path: Path
) -> None:
    # Where the copies go, a hard link and a symbolic link to the inputs already have the
    # copies' names: writing the copy would write the input.
    out = tmp_path / "out"
    out.mkdir()
    os.link(inputs / "event.png", out / "event.png")
    completed = detect(model_root, inputs / "event.png", "--annotate", out)
    assert completed.returncode == 2, completed.stderr
    one_line_error(completed, str(out / "event.png"), "would overwrite an input")
    (out / "event.png").unlink()
    (out / "clip.mp4").symlink_to(inputs / "clip.mp4")
    completed = detect(model_root, inputs / "clip.mp4", "--annotate", out)
    assert completed.returncode == 2, completed.stderr
    one_line_error(completed, str(out / "clip.mp4"), "would overwrite an input")
    assert frame_count(inputs / "clip.mp4") == 6


def test_annotating_elsewhere_still_writes_every_copy(
    model_root: Path, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "annotated"
    completed = detect(model_root, inputs, "--annotate", out)
    assert completed.returncode == 0, completed.stderr
    assert sorted(path.name for path in out.iterdir()) == ["clip.mp4", "event.png"]
    assert frame_count(out / "clip.mp4") == 6
    # A second run into the same folder replaces its own earlier copies: not inputs.
    assert detect(model_root, inputs, "--annotate", out).returncode == 0


# --- images declaring a huge size ---------------------------------------------------------


def huge_png(path: Path, *, width: int, height: int, rows: int | None = None) -> None:
    """A valid 1-bit grey PNG of `width` x `height` zeros: about 110 KB for 30000x30000,
    2.7 GB once decoded to BGR. With `rows`, only that many rows of data follow (a header
    that lies)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed pixels
    count = height if rows is None else rows
    idat = b"".join(compressor.compress(row) for _ in range(count)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def huge_jpeg_header(path: Path, *, width: int, height: int) -> None:
    """SOI and a baseline frame header declaring `width` x `height`, then end of image."""
    components = b"".join(bytes([index, 0x11, 0]) for index in (1, 2, 3))
    sof = struct.pack(">BHHB", 8, height, width, 3) + components
    path.write_bytes(b"\xff\xd8\xff\xc0" + struct.pack(">H", 2 + len(sof)) + sof + b"\xff\xd9")


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    max_rss_mb: float
    seconds: float


def run_cli_measured(*args: str | Path, tmp_path: Path, timeout: float = 120.0) -> Measured:
    """`run_cli`, plus the child's own peak RSS from wait4 (not polluted by other children)."""
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    started = time.monotonic()
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            [*edge_facedet_command(), *map(str, args)], stdout=out, stderr=err
        )
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            os.wait4(process.pid, 0)
            pytest.fail(f"edge-facedet {args} did not finish in {timeout} s")
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        returncode=process.returncode,
        stdout=out_path.read_text(),
        stderr=err_path.read_text(),
        max_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        seconds=time.monotonic() - started,
    )


def test_huge_declared_images_are_refused_unread_and_the_others_processed(
    model_root: Path, inputs: Path, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    media.mkdir()
    huge_png(media / "bomb.png", width=30000, height=30000)
    assert (media / "bomb.png").stat().st_size < 200_000
    # Over OpenCV's own 2**30-pixel limit, whose assertion ended the whole run before.
    huge_png(media / "wide.png", width=40000, height=40000, rows=1)
    huge_jpeg_header(media / "wide.jpg", width=40000, height=40000)
    measured = run_cli_measured(
        "detect", "--models-dir", model_root, "--device", "CPU",
        media / "bomb.png", media / "wide.png", media / "wide.jpg", inputs / "event.png",
        tmp_path=tmp_path,
    )  # fmt: skip
    assert measured.returncode == 1, measured.stderr  # some file failed, the rest done
    assert "Traceback" not in measured.stderr
    errors = measured.stderr.splitlines()
    assert len(errors) == 3, measured.stderr
    expected = [
        ("bomb.png", "30000x30000"),
        ("wide.png", "40000x40000"),
        ("wide.jpg", "40000x40000"),
    ]
    for error, (name, size) in zip(errors, expected, strict=True):
        assert str(media / name) in error
        assert f"header declares {size} pixels" in error
    (line,) = [json.loads(text) for text in measured.stdout.splitlines()]
    assert line["file"] == str(inputs / "event.png")
    assert len(line["faces"]) >= 3
    # Decoded, the PNG alone is 2.7 GB of BGR; the model and OpenVINO take a few hundred MB.
    assert measured.max_rss_mb < 1500, measured
    print(f"peak RSS {measured.max_rss_mb:.0f} MB, {measured.seconds:.1f} s")


def test_the_pixel_cap_is_an_option(model_root: Path, inputs: Path, tmp_path: Path) -> None:
    # event.png is 640x480 = 0.3 MP: refused under a 0.1 MP cap, read under the default.
    completed = detect(model_root, inputs / "event.png", "--max-megapixels", "0.1")
    assert completed.returncode == 1, completed.stderr
    one_line_error(completed, "event.png", "640x480", "0.1 MP cap")
    completed = detect(model_root, inputs / "event.png")
    assert completed.returncode == 0, completed.stderr
