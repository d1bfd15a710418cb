"""What the shipped unit's sandbox hides from a config that validates in a shell.

`check-config` runs in the operator's shell, where /home is visible. The unit
(systemd/edge-facedet.service) has `ProtectHome=yes`, which makes /home, /root and /run/user
empty and inaccessible to the service, so a file camera there would fail only once the
service runs. `check-config` warns about it; it is not an error, since a config run from a
shell (`edge-facedet run`, the demo) may read files there. (`PrivateTmp=yes` hides /tmp too,
but tests and scratch configs live there: the README says it instead of a warning.)
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Final

from edge_facedet.config.camera_urls import display_detect_url, display_url
from edge_facedet.sources.filecheck import file_path
from edge_facedet.sources.urls import SourceKind, source_kind

if TYPE_CHECKING:
    from edge_facedet.config.service import ServiceConfig

# The folders ProtectHome=yes hides (systemd.exec(5)).
HIDDEN_BY_PROTECT_HOME: Final = tuple(PurePosixPath(p) for p in ("/home", "/root", "/run/user"))


def _hidden_folder(url: str) -> PurePosixPath | None:
    """The folder hidden by ProtectHome= that a file camera's URL lies under, or None."""
    if source_kind(url) is not SourceKind.FILE:
        return None
    path = file_path(url)
    # Relative paths were made absolute against the config's folder; `file:///x` leaves
    # extra slashes, and ".." could lead out of or into a hidden folder.
    path = os.path.normpath("/" + path.lstrip("/"))
    return next(
        (root for root in HIDDEN_BY_PROTECT_HOME if PurePosixPath(path).is_relative_to(root)),
        None,
    )


def hidden_camera_files(config: ServiceConfig) -> list[str]:
    """One warning line for each camera URL that is a file the unit cannot see."""
    warnings = []
    for index, camera in enumerate(config.cameras):
        for field, url, shown in (
            ("url", camera.url, display_url(camera)),
            ("detect_url", camera.detect_url, display_detect_url(camera)),
        ):
            folder = None if url is None else _hidden_folder(url)
            if folder is not None:
                warnings.append(
                    f"warning: cameras[{index}] (id {camera.id!r}).{field}: {shown} is under "
                    f"{folder}, which the systemd unit cannot see (ProtectHome=yes); for the "
                    "service, keep camera files elsewhere, e.g. /srv/edge-facedet"
                )
    return warnings
