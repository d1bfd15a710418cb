"""The HTTP server's connection cap: which connections are open and whom a newcomer replaces.

Decided on the bare accepted socket, before asyncio makes a transport or a task for it, so a
refused connection costs its accept and nothing else. A slow client differs from a scraper in
one way that shows at once: its request is not all there. So over the cap:

* a newcomer whose whole request head is already in the socket (looked at with MSG_PEEK)
  replaces the connection that has waited longest for its request, however young;
* any other newcomer replaces it only if that one has waited `protect_s`; otherwise it is held
  on probation (at most `PROBATION_MAX` of them, each at most `PROBATION_S`): admitted the
  moment its request arrives in full, closed if anything less arrives or time runs out. A
  scraper's request usually follows its connect within a millisecond; a slow client's never
  comes whole.

Connections that are answering, or whose request was all there, are never replaced.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_facedet.outputs.httpserver import HttpLimits

PROBATION_MAX = 16
PROBATION_S = 0.05


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    since: float
    """When the current wait for a request began (the accept, then each answer's end)."""
    ready: bool = False
    """Its whole request head was there when it was let in: never replaced before its answer."""
    writer: asyncio.StreamWriter | None = None
    waiting: bool = False
    """Waiting for a request (may be replaced), not answering one."""
    served: int = 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        else:
            self.sock.close()


class Admission:
    """Runs on the server's loop. `admitted` is called with each connection let in (the
    server then serves it and calls `closed`); `dropped` with "over_cap" or "evicted"."""

    def __init__(
        self,
        *,
        limits: HttpLimits,
        admitted: Callable[[Connection], None],
        dropped: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self._limits = limits
        self._admitted = admitted
        self._dropped = dropped
        self._clock = clock
        self.open: set[Connection] = set()
        self._probation: dict[socket.socket, asyncio.TimerHandle] = {}

    def offer(self, sock: socket.socket) -> None:
        """A socket just accepted (non-blocking)."""
        now = self._clock()
        ready = _head_arrived(sock, limit=self._limits.head.max_head_bytes)
        if len(self.open) < self._limits.max_connections or self._make_room(now, ready=ready):
            self._admit(sock, now=now, ready=ready)
        elif ready:  # every connection is answering or has its request: no one to replace
            sock.close()
            self._dropped("over_cap")
        else:
            self._hold(sock)

    def closed(self, connection: Connection) -> None:
        self.open.discard(connection)

    def close_all(self) -> None:
        for sock in list(self._probation):
            self._release(sock)
        for connection in list(self.open):
            connection.close()

    def _admit(self, sock: socket.socket, *, now: float, ready: bool) -> None:
        connection = Connection(sock=sock, since=now, ready=ready)
        self.open.add(connection)
        self._admitted(connection)

    def _make_room(self, now: float, *, ready: bool) -> bool:
        """Close the connection that has waited longest for its request, kept-alive ones
        first (only one that waited `protect_s`, unless the newcomer's request is there)."""
        protect = 0.0 if ready else self._limits.protect_s
        candidates = [
            c for c in self.open if c.waiting and not c.ready and now - c.since >= protect
        ]
        victim = min(candidates, key=lambda c: (c.served == 0, c.since), default=None)
        if victim is None:
            return False
        self.open.discard(victim)
        victim.close()
        self._dropped("evicted")
        return True

    def _hold(self, sock: socket.socket) -> None:
        if len(self._probation) >= PROBATION_MAX:
            self._release(next(iter(self._probation)))  # the oldest
        loop = asyncio.get_running_loop()
        self._probation[sock] = loop.call_later(PROBATION_S, self._release, sock)
        loop.add_reader(sock.fileno(), self._arrived, sock)

    def _arrived(self, sock: socket.socket) -> None:
        """Data (or the end) came on a socket on probation: admit it only if its request is
        all there; something less (a slow client's first line) closes it."""
        if not _head_arrived(sock, limit=self._limits.head.max_head_bytes):
            self._release(sock)
            return
        self._unhold(sock)
        now = self._clock()
        if len(self.open) < self._limits.max_connections or self._make_room(now, ready=True):
            self._admit(sock, now=now, ready=True)
        else:
            sock.close()
            self._dropped("over_cap")

    def _release(self, sock: socket.socket) -> None:
        self._unhold(sock)
        sock.close()
        self._dropped("over_cap")

    def _unhold(self, sock: socket.socket) -> None:
        handle = self._probation.pop(sock, None)
        if handle is not None:
            handle.cancel()
        asyncio.get_running_loop().remove_reader(sock.fileno())


def _head_arrived(sock: socket.socket, *, limit: int) -> bool:
    """Whether a whole request head already waits in the socket, looked at without reading
    it (a request larger than `limit` counts as there: the server answers it with 431)."""
    try:
        data = sock.recv(limit, socket.MSG_PEEK)
    except OSError:
        return False
    return b"\r\n\r\n" in data or b"\n\n" in data or len(data) >= limit
