"""What a camera URL names: a network stream, a file or a local (V4L2) device.

One classification for the config's checks and the camera reader, so a URL the config
accepts as a file is read as a file.
"""

from __future__ import annotations

import enum
from urllib.parse import urlsplit

__all__ = ["SourceKind", "source_kind"]


class SourceKind(enum.Enum):
    NETWORK = "network"
    FILE = "file"
    DEVICE = "device"


def source_kind(url: str) -> SourceKind:
    if url.isdigit() or url.startswith(("/dev/video", "/dev/v4l/")):
        return SourceKind.DEVICE
    scheme = urlsplit(url).scheme.lower()
    # A one-letter "scheme" is a Windows drive letter, i.e. a file path.
    if len(scheme) > 1 and scheme != "file":
        return SourceKind.NETWORK
    return SourceKind.FILE
