"""Model and demo-media install: real mirror files, a real loopback HTTP server, real failures."""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import pytest
import yaml

from edge_facedet.tools.assets import (
    DEMO_MEDIA,
    MODEL_FILES,
    MODEL_NAME,
    PRECISIONS,
    AssetError,
    default_model_root,
    fetch_demo_media,
    fetch_model,
    model_xml_path,
    verify_model,
)
from tests.support.paths import MEDIA, MODEL_MIRROR

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# The shared mirror holds these two; FP32 exists only upstream.
MIRRORED = ("FP16", "FP16-INT8")
MODEL_SUBDIR = Path("intel") / MODEL_NAME


def _copy_tree(src: Path, dst: Path) -> None:
    # copytree would copy the mirror's read-only modes; the tests need to corrupt the copies.
    for path in src.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _flip_byte(path: Path, *, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A writable copy of the shared model mirror (only the precisions it holds)."""
    assert (MODEL_MIRROR / MODEL_SUBDIR).is_dir(), f"shared model mirror missing: {MODEL_MIRROR}"
    copy = tmp_path / "mirror"
    for precision in MIRRORED:
        _copy_tree(MODEL_MIRROR / MODEL_SUBDIR / precision, copy / MODEL_SUBDIR / precision)
    return copy


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "models"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        pass


@contextmanager
def _serve(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http_mirror(mirror: Path) -> Iterator[str]:
    """Base URL of a loopback HTTP server serving the mirror copy."""
    with _serve(functools.partial(_QuietHandler, directory=str(mirror))) as url:
        yield url


def test_manifest_matches_open_model_zoo_descriptor() -> None:
    descriptor = yaml.safe_load((MODEL_MIRROR / MODEL_SUBDIR / "model.yml").read_text())
    published = {
        entry["name"]: (entry["source"], entry["size"], entry["checksum"])
        for entry in descriptor["files"]
    }
    pinned = {
        asset.relpath.removeprefix(f"intel/{MODEL_NAME}/"): (asset.url, asset.size, asset.sha384)
        for precision in PRECISIONS
        for asset in MODEL_FILES[precision]
    }
    assert pinned == published
    assert set(MODEL_FILES) == set(PRECISIONS)


def test_fetch_from_mirror_installs_verified_copies(mirror: Path, dest: Path) -> None:
    messages: list[str] = []
    for precision in MIRRORED:
        xml = fetch_model(precision=precision, dest=dest, mirror=mirror, progress=messages.append)
        assert xml == dest / "intel" / MODEL_NAME / precision / f"{MODEL_NAME}.xml"
        assert xml == model_xml_path(dest, precision)
        assert verify_model(root=dest, precision=precision) == xml
    # Exactly the mirrored files, byte for byte, and no temporary files left behind.
    assert _files_under(dest) == _files_under(mirror)
    for rel in _files_under(mirror):
        assert (dest / rel).read_bytes() == (mirror / rel).read_bytes()
    assert sum("installed" in m for m in messages) == 4


def test_refetch_keeps_installed_files(mirror: Path, dest: Path) -> None:
    xml = fetch_model(precision="FP16-INT8", dest=dest, mirror=mirror)
    bin_path = xml.with_suffix(".bin")
    before = [(p.stat().st_mtime_ns, p.stat().st_ino) for p in (xml, bin_path)]
    messages: list[str] = []
    fetch_model(precision="FP16-INT8", dest=dest, mirror=mirror, progress=messages.append)
    assert [(p.stat().st_mtime_ns, p.stat().st_ino) for p in (xml, bin_path)] == before
    assert len(messages) == 2
    assert all("present, size and SHA-384 verified" in m for m in messages)


def test_checksum_mismatch_names_file_and_installs_nothing(mirror: Path, dest: Path) -> None:
    bad = mirror / MODEL_SUBDIR / "FP16" / f"{MODEL_NAME}.bin"
    _flip_byte(bad, offset=1000)
    with pytest.raises(AssetError, match=r"FP16/face-detection-0204\.bin: SHA-384 [0-9a-f]{16}"):
        fetch_model(precision="FP16", dest=dest, mirror=mirror)
    assert not (dest / MODEL_SUBDIR / "FP16" / f"{MODEL_NAME}.bin").exists()
    # The .xml before it was good and stays; no temporary file is left.
    assert _files_under(dest) == {str(MODEL_SUBDIR / "FP16" / f"{MODEL_NAME}.xml")}


def test_truncated_file_is_rejected_and_removed(mirror: Path, dest: Path) -> None:
    bad = mirror / MODEL_SUBDIR / "FP16-INT8" / f"{MODEL_NAME}.xml"
    bad.write_bytes(bad.read_bytes()[:4096])
    with pytest.raises(AssetError, match=r"face-detection-0204\.xml: 4096 bytes, expected 490746"):
        fetch_model(precision="FP16-INT8", dest=dest, mirror=mirror)
    assert _files_under(dest) == set()


def test_oversized_file_is_rejected(mirror: Path, dest: Path) -> None:
    bad = mirror / MODEL_SUBDIR / "FP16-INT8" / f"{MODEL_NAME}.xml"
    bad.write_bytes(bad.read_bytes() + b"\n")
    with pytest.raises(AssetError, match="more than the expected 490746 bytes"):
        fetch_model(precision="FP16-INT8", dest=dest, mirror=mirror)
    assert _files_under(dest) == set()


def test_missing_mirror_folder_is_named(tmp_path: Path, dest: Path) -> None:
    missing = tmp_path / "no-such-mirror"
    with pytest.raises(
        AssetError, match=f"model mirror folder {re.escape(str(missing))} does not exist"
    ):
        fetch_model(precision="FP16", dest=dest, mirror=missing)
    assert not dest.exists()


def test_missing_file_in_mirror_is_named(mirror: Path, dest: Path) -> None:
    # The mirror has no FP32 at all.
    expected = mirror / MODEL_SUBDIR / "FP32" / f"{MODEL_NAME}.xml"
    with pytest.raises(
        AssetError, match=f"model mirror file {re.escape(str(expected))} is missing"
    ):
        fetch_model(precision="FP32", dest=dest, mirror=mirror)
    assert not dest.exists()


def test_unknown_precision_lists_valid_ones(mirror: Path, dest: Path) -> None:
    valid = "valid precisions: FP16, FP16-INT8, FP32"
    with pytest.raises(AssetError, match=f"unknown model precision 'INT4'; {valid}"):
        fetch_model(precision="INT4", dest=dest, mirror=mirror)
    with pytest.raises(AssetError, match=valid):
        model_xml_path(dest, "fp16")
    assert not dest.exists()


def test_corrupt_installed_file_is_replaced(mirror: Path, dest: Path) -> None:
    xml = fetch_model(precision="FP16", dest=dest, mirror=mirror)
    bin_path = xml.with_suffix(".bin")
    good = bin_path.read_bytes()
    _flip_byte(bin_path, offset=len(good) // 2)
    with pytest.raises(AssetError, match=r"face-detection-0204\.bin: SHA-384"):
        verify_model(root=dest, precision="FP16")
    xml.write_bytes(b"<net/>")  # and a wrong-size one
    fetch_model(precision="FP16", dest=dest, mirror=mirror)
    assert bin_path.read_bytes() == good
    assert verify_model(root=dest, precision="FP16") == xml


def test_verify_model_names_missing_file(dest: Path) -> None:
    with pytest.raises(AssetError, match=r"FP16-INT8/face-detection-0204\.xml is missing.*fetch"):
        verify_model(root=dest, precision="FP16-INT8")


def test_download_from_http_mirror(http_mirror: str, mirror: Path, dest: Path) -> None:
    messages: list[str] = []
    for precision in MIRRORED:
        fetch_model(
            precision=precision, dest=dest, mirror_url=http_mirror, progress=messages.append
        )
    assert _files_under(dest) == _files_under(mirror)
    for rel in _files_under(mirror):
        assert (dest / rel).read_bytes() == (mirror / rel).read_bytes()
    assert any(f"fetching from {http_mirror}intel/{MODEL_NAME}/FP16/" in m for m in messages)


def test_download_with_bad_checksum_is_rejected(http_mirror: str, mirror: Path, dest: Path) -> None:
    _flip_byte(mirror / MODEL_SUBDIR / "FP16" / f"{MODEL_NAME}.xml", offset=10)
    with pytest.raises(
        AssetError, match=rf"{re.escape(http_mirror)}\S+/FP16/face-detection-0204\.xml: SHA"
    ):
        fetch_model(precision="FP16", dest=dest, mirror_url=http_mirror)
    assert _files_under(dest) == set()


def test_download_http_error_names_url(http_mirror: str, dest: Path) -> None:
    # The HTTP mirror has no FP32 files.
    url = f"{http_mirror}intel/{MODEL_NAME}/FP32/{MODEL_NAME}.xml"
    with pytest.raises(AssetError, match=f"download of {re.escape(url)} failed: HTTP 404"):
        fetch_model(precision="FP32", dest=dest, mirror_url=http_mirror)
    assert _files_under(dest) == set()


class _TruncatingHandler(BaseHTTPRequestHandler):
    """Announces the full length, sends half the body, then hangs up."""

    root: Path

    def do_GET(self) -> None:
        body = (self.root / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        pass


@pytest.fixture
def truncating_server(mirror: Path) -> Iterator[str]:
    with _serve(type("Handler", (_TruncatingHandler,), {"root": mirror})) as url:
        yield url


def test_download_truncated_body_is_rejected(truncating_server: str, dest: Path) -> None:
    url = truncating_server
    with pytest.raises(
        AssetError, match=rf"{re.escape(url)}\S+\.xml: 127439 bytes, expected 254879"
    ):
        fetch_model(precision="FP16", dest=dest, mirror_url=url)
    assert _files_under(dest) == set()


class _StallingHandler(BaseHTTPRequestHandler):
    """Sends headers, then nothing until the test ends."""

    release: threading.Event

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "254879")
        self.end_headers()
        self.wfile.flush()
        self.release.wait(timeout=10)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class name
        pass


@pytest.fixture
def stalling_server() -> Iterator[str]:
    release = threading.Event()
    with _serve(type("Handler", (_StallingHandler,), {"release": release})) as url:
        try:
            yield url
        finally:
            # Unblocks the handler thread so the server shuts down at once.
            release.set()


def test_download_stall_times_out(stalling_server: str, dest: Path) -> None:
    url = stalling_server
    with pytest.raises(
        AssetError, match=rf"download of {re.escape(url)}\S+ failed: no data for 0\.3 s"
    ):
        fetch_model(precision="FP16", dest=dest, mirror_url=url, timeout_s=0.3)
    assert _files_under(dest) == set()


def test_default_model_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGE_FACEDET_MODELS", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_model_root() == tmp_path / "home/.local/share/edge-facedet/models"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_model_root() == tmp_path / "home/.local/share/edge-facedet/models"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_model_root() == tmp_path / "xdg/edge-facedet/models"
    monkeypatch.setenv("EDGE_FACEDET_MODELS", str(tmp_path / "explicit"))
    assert default_model_root() == tmp_path / "explicit"


def test_demo_media_from_mirror_is_verified_and_decodable(tmp_path: Path) -> None:
    dest = tmp_path / "media"
    paths = fetch_demo_media(dest=dest, mirror=MEDIA)
    assert paths == [dest / asset.relpath for asset in DEMO_MEDIA]
    assert [p.name for p in paths] == [
        "head-pose-face-detection-female-and-male.gif",
        "face-demographics-walking.gif",
        "classroom.gif",
    ]
    for path, asset in zip(paths, DEMO_MEDIA, strict=True):
        assert hashlib.sha384(path.read_bytes()).hexdigest() == asset.sha384
        assert asset.url.startswith("https://github.com/intel-iot-devkit/sample-videos/raw/")
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            ok, frame = capture.read()
        finally:
            capture.release()
        assert ok, f"OpenCV cannot decode {path}"
        assert frame.shape == (270, 480, 3)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert fetch_demo_media(dest=dest, mirror=MEDIA) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes


def test_demo_media_missing_mirror_file(tmp_path: Path) -> None:
    partial = tmp_path / "media-mirror"
    for asset in DEMO_MEDIA[:-1]:
        (partial / asset.relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MEDIA / asset.relpath, partial / asset.relpath)
    assert DEMO_MEDIA[-1].name == "classroom.gif"
    dest = tmp_path / "media"
    with pytest.raises(AssetError, match=r"media mirror file \S+/classroom\.gif is missing"):
        fetch_demo_media(dest=dest, mirror=partial)
    assert not (dest / "sample-videos" / "classroom.gif").exists()


def test_mirror_and_mirror_url_are_exclusive(mirror: Path, dest: Path) -> None:
    with pytest.raises(ValueError, match="either mirror or mirror_url"):
        fetch_model(precision="FP16", dest=dest, mirror=mirror, mirror_url="http://127.0.0.1:9/")
    assert not dest.exists()
