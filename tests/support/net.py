"""Loopback ports for the servers the tests start (brokers, RTSP servers, metrics pages)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it).

    The socket is closed before the caller binds, so another process could take the port in
    between; the tests accept that small race rather than passing sockets around.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
