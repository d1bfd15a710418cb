"""A camera's URLs as they are used: with credentials to open, redacted to show.

`username:` and `password:` are inserted into the URL only when it is opened
(`detect_open_url`); logs, state messages and metrics get `display_url` or
`display_detect_url`, which never contain a credential.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

from edge_facedet.redact import redact_url

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from edge_facedet.config.camera import CameraConfig


def detect_open_url(
    camera: CameraConfig,
    *,
    environ: Mapping[str, str] | None = None,
    credentials_dir: Path | None = None,
) -> str:
    """The URL the reader opens for detection: `detect_url` if set, else `url`.

    Contains the password: never log it; log `display_detect_url(camera)` instead.
    """
    return with_credentials(
        camera,
        url=camera.detect_url or camera.url,
        environ=environ,
        credentials_dir=credentials_dir,
    )


def with_credentials(
    camera: CameraConfig,
    *,
    url: str,
    environ: Mapping[str, str] | None,
    credentials_dir: Path | None,
) -> str:
    """`url` (any of the camera's URLs) with the camera's `username:` and `password:` in
    it; `url` as it is without a username. Contains the password: never log it."""
    if camera.username is None:
        return url
    userinfo = quote(camera.username, safe="")
    if camera.password is not None:
        secret = camera.password.reveal(environ=environ, credentials_dir=credentials_dir)
        userinfo += ":" + quote(secret, safe="")
    parts = urlsplit(url)
    return urlunsplit(
        (parts.scheme, f"{userinfo}@{parts.netloc}", parts.path, parts.query, parts.fragment)
    )


def display_url(camera: CameraConfig) -> str:
    """The camera's URL for logs, state messages and metrics: credentials redacted."""
    return _display(camera, url=camera.url)


def display_detect_url(camera: CameraConfig) -> str:
    """`detect_open_url` for logs: credentials redacted."""
    return _display(camera, url=camera.detect_url or camera.url)


def _display(camera: CameraConfig, *, url: str) -> str:
    if camera.username is not None:
        # Show that credentials are used, the same way as for credentials in the URL.
        parts = urlsplit(url)
        camera_url = urlunsplit(
            (parts.scheme, f"user:pass@{parts.netloc}", parts.path, parts.query, parts.fragment)
        )
        return redact_url(camera_url)
    return redact_url(url)
