"""The network probe: does a camera's server answer, before its URL goes to the decoder?

OpenCV's FFmpeg backend opens every capture of the process under one global lock, so an open
that waits out its timeout (a camera that accepts TCP but never answers, an unreachable host,
a frozen server) holds up the opens of all other cameras, looping files included, for that
long: one dead camera paused every reconnecting camera. The probe waits in the reader's own
thread instead, outside that lock: a TCP connect, and for RTSP an OPTIONS request whose reply
(any status, 401 included) shows the server is alive.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from edge_facedet.sources.urls import default_port, scheme_of


class ProbeError(Exception):
    """The server did not answer as it should; the message is the reason, never the URL."""


def probe(url: str, *, timeout_s: float) -> None:
    """Return once the server of network URL `url` answers; raise `ProbeError` otherwise.

    Connectionless schemes (UDP) and URLs without a host or usable port are not probed: the
    decoder reports what is wrong with them.
    """
    parts = urlsplit(url)
    scheme = scheme_of(url)
    if scheme == "udp":
        return  # connectionless: nothing to probe
    port = default_port(url)  # None for a malformed port: the decoder reports it
    host = parts.hostname
    if host is None or port is None:
        return
    started = time.monotonic()
    deadline = started + timeout_s
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            if scheme != "rtsp":
                return  # http(s), rtsps, rtmp, tcp: the TCP connect is the probe
            sock.sendall(_options_request(host=host, port=port, path=parts.path))
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            reply = sock.recv(16)
    except OSError as exc:
        waited = time.monotonic() - started
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or "error")
        raise ProbeError(f"{reason}; gave up after {waited:.1f} s") from None
    if not reply.startswith(b"RTSP/"):
        raise ProbeError("not an RTSP server: no RTSP reply to OPTIONS")


def _options_request(*, host: str, port: int, path: str) -> bytes:
    """An RTSP OPTIONS request for the URL without its credentials."""
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = (
        f"OPTIONS rtsp://{netloc}{path or '/'} RTSP/1.0\r\n"
        "CSeq: 1\r\nUser-Agent: edge-facedet\r\n\r\n"
    )
    return request.encode()
