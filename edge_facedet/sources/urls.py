"""The URL model: what a camera URL names, and what its scheme implies.

One table (`SCHEMES`) gives each accepted scheme its source kind, default port, whether its
stream carries the sender's live media clock, and whether FFmpeg's socket timeout applies.
The config's checks, the readers, the decoders and the lag estimator all ask it, so a URL the
config accepts is read the way the config understood it, and a scheme is added in one place.

SRT, RTP and RTMPS are not accepted: neither decoder's bundled FFmpeg is known to read them
on every supported install, so the config refuses them with the list of schemes it takes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "SCHEMES",
    "Scheme",
    "SourceKind",
    "default_port",
    "has_live_clock",
    "scheme_of",
    "source_kind",
    "takes_socket_timeouts",
]


class SourceKind(enum.Enum):
    NETWORK = "network"
    FILE = "file"
    DEVICE = "device"


@dataclass(frozen=True, slots=True)
class Scheme:
    """What one URL scheme implies for reading it."""

    kind: SourceKind
    default_port: int | None
    """Port probed when the URL names none; None for connectionless or portless schemes."""
    live_clock: bool
    """The stream's timestamps are the sender's media clock, delivered as it runs, so a
    reader's lag can be read from them. Not HTTP: MJPEG streams often carry no or made-up
    timestamps and HLS delivers whole segments at once. Not files or devices."""
    socket_timeouts: bool
    """FFmpeg's `timeout` option bounds this protocol's socket waits (RTSP, HTTP)."""


_NET = SourceKind.NETWORK
SCHEMES: Final = MappingProxyType(
    {
        "rtsp": Scheme(kind=_NET, default_port=554, live_clock=True, socket_timeouts=True),
        "rtsps": Scheme(kind=_NET, default_port=322, live_clock=True, socket_timeouts=True),
        "http": Scheme(kind=_NET, default_port=80, live_clock=False, socket_timeouts=True),
        "https": Scheme(kind=_NET, default_port=443, live_clock=False, socket_timeouts=True),
        "rtmp": Scheme(kind=_NET, default_port=1935, live_clock=True, socket_timeouts=False),
        "udp": Scheme(kind=_NET, default_port=None, live_clock=True, socket_timeouts=False),
        "tcp": Scheme(kind=_NET, default_port=None, live_clock=True, socket_timeouts=False),
        "file": Scheme(
            kind=SourceKind.FILE, default_port=None, live_clock=False, socket_timeouts=False
        ),
    }
)

_SCHEME_PREFIX = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_DEVICE_PREFIXES = ("/dev/video", "/dev/v4l/")


def scheme_of(url: str) -> str | None:
    """The lower-cased scheme of a `scheme://...` URL, or None for a path or device."""
    match = _SCHEME_PREFIX.match(url)
    return match["scheme"].lower() if match else None


def _scheme(url: str) -> Scheme | None:
    name = scheme_of(url)
    return None if name is None else SCHEMES.get(name)


def source_kind(url: str) -> SourceKind:
    """Network stream, file or V4L2 device (an index such as `0`, or a /dev path)."""
    if url.isdigit() or url.startswith(_DEVICE_PREFIXES):
        return SourceKind.DEVICE
    scheme = _scheme(url)
    if scheme is not None:
        return scheme.kind
    # An unknown `scheme://` never passes the config; a bare path is a file.
    return SourceKind.NETWORK if scheme_of(url) else SourceKind.FILE


def default_port(url: str) -> int | None:
    """The port a network URL connects to: its own, else its scheme's default."""
    scheme = _scheme(url)
    try:
        port = urlsplit(url).port
    except ValueError:
        return None
    if port is not None:
        return port
    return None if scheme is None else scheme.default_port


def has_live_clock(url: str) -> bool:
    scheme = _scheme(url)
    return scheme is not None and scheme.live_clock


def takes_socket_timeouts(url: str) -> bool:
    scheme = _scheme(url)
    return scheme is not None and scheme.socket_timeouts
