"""The URL model: one table, and the config, readers and lag agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_facedet.sources.urls import (
    SCHEMES,
    SourceKind,
    default_port,
    scheme_of,
    source_kind,
    takes_socket_timeouts,
)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("rtsp://cam/stream", SourceKind.NETWORK),
        ("HTTP://cam/mjpg", SourceKind.NETWORK),
        ("udp://239.0.0.1:1234", SourceKind.NETWORK),
        ("file:///srv/a.mp4", SourceKind.FILE),
        ("/srv/a.mp4", SourceKind.FILE),
        ("clips/a.mp4", SourceKind.FILE),
        ("C:\\clips\\a.mp4", SourceKind.FILE),
        ("/dev/video0", SourceKind.DEVICE),
        ("/dev/v4l/by-id/usb-cam", SourceKind.DEVICE),
        ("0", SourceKind.DEVICE),
    ],
)
def test_source_kind(url: str, kind: SourceKind) -> None:
    assert source_kind(url) is kind


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("rtsp://cam/s", 554),
        ("rtsps://cam/s", 322),
        ("rtsp://cam:8554/s", 8554),
        ("http://cam/", 80),
        ("https://cam/", 443),
        ("rtmp://cam/app", 1935),
        ("udp://239.0.0.1:1234", 1234),
        ("udp://239.0.0.1", None),
        ("rtsp://cam:99999/s", None),
    ],
)
def test_default_port(url: str, port: int | None) -> None:
    assert default_port(url) == port


def test_socket_timeouts_only_for_rtsp_and_http() -> None:
    assert {name for name, s in SCHEMES.items() if s.socket_timeouts} == {
        "rtsp",
        "rtsps",
        "http",
        "https",
    }
    assert takes_socket_timeouts("RTSP://cam/s")
    assert not takes_socket_timeouts("udp://239.0.0.1:1234")


def test_scheme_of_needs_the_double_slash() -> None:
    assert scheme_of("Rtsp://cam") == "rtsp"
    assert scheme_of("rtsp:cam") is None
    assert scheme_of("/srv/a.mp4") is None


def _config_with(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "c.yaml"
    config.write_text(f"cameras:\n  - id: a\n    url: '{url}'\n", encoding="utf-8")
    return config


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_config_accepts_every_scheme_in_the_table(tmp_path: Path, scheme: str) -> None:
    from edge_facedet.config import load_config

    url = "file:///srv/a.mp4" if scheme == "file" else f"{scheme}://cam:1234/s"
    assert load_config(_config_with(tmp_path, url)).cameras[0].url == url


@pytest.mark.parametrize("scheme", ["srt", "rtp", "rtmps", "ftp"])
def test_config_refuses_schemes_outside_the_table(tmp_path: Path, scheme: str) -> None:
    from edge_facedet.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=f"unsupported URL scheme '{scheme}'; use one of file, "):
        load_config(_config_with(tmp_path, f"{scheme}://cam:9000/s"))
