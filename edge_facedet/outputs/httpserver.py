"""A small HTTP/1.1 server with routes, bounded in connections, bytes and time, in a thread.

The standard library's servers (wsgiref, http.server) spend a thread per connection and time
out per line: about 1,000 slow clients took every file descriptor of the process, so cameras
and broker could not reconnect, and clients with large headers pinned hundreds of MB
(docs/reliability.md). Here one asyncio loop in one thread of its own serves every
connection, so scrapes never run on the service's event loop and keep answering if it is
busy, and:

* at most `max_connections` are open; over the cap a newcomer takes the place of a slow
  client or is closed before it costs more than its accept (httpadmission.py);
* a request head must be complete `request_timeout_s` after the accept, however it trickles
  in; the next one on a kept-alive connection `idle_timeout_s` after the previous answer;
* head size, header lines and body are capped (httpmessages.py), so a connection's memory is
  bounded by the limits, and an answer must reach the kernel within `write_timeout_s`.

Handlers are plain functions run on this loop: they must be quick (rendering metrics is).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

from edge_facedet.logthrottle import every_power_of_two
from edge_facedet.outputs.httpadmission import Admission, Connection
from edge_facedet.outputs.httpmessages import (
    HeadLimits,
    HttpError,
    PeerClosedError,
    Request,
    Response,
    read_request,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

DROP_REASONS = ("over_cap", "evicted", "timeout", "bad_request")
# After an error answer the peer may still be sending (a body, the rest of a huge head):
# closing with unread data resets the connection, and the reset can overtake the answer.
LINGER_S = 0.5
LINGER_BYTES = 1024 * 1024
START_TIMEOUT_S = 5.0
ACCEPT_BATCH = 32
ACCEPT_PAUSE_S = 1.0
LISTEN_BACKLOG = 512
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
STOP_TIMEOUT_S = 2.0


class HttpEvents(Protocol):
    """What the server reports (outputs/metrics.py turns it into metrics)."""

    def dropped(self, reason: str) -> None:
        """A connection closed without a normal answer; `reason` is one of DROP_REASONS."""

    def connections(self, count: int) -> None:
        """The number of open connections changed."""


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 64
    request_timeout_s: float = 5.0
    idle_timeout_s: float = 5.0
    write_timeout_s: float = 10.0
    max_requests: int = 100
    """Requests per connection; the last answer says `Connection: close`."""
    protect_s: float = 0.02
    """A connection this young is only replaced by one whose request is all there."""
    head: HeadLimits = field(default_factory=HeadLimits)


class HttpServer:
    """Serves `routes` (path -> handler) on host:port from a thread named `thread_name`.

    The socket is bound in the constructor, so a port in use fails there; `start()` returns
    once the server accepts, `stop()` closes every connection and ends the thread.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        routes: Mapping[str, Callable[[Request], Response]],
        not_found: Callable[[Request], Response],
        limits: HttpLimits | None = None,
        events: HttpEvents | None = None,
        thread_name: str = "http",
    ) -> None:
        self._routes = dict(routes)
        self._not_found = not_found
        self._limits = limits = limits or HttpLimits()
        self._events = events
        self._sock = _listen(host, port)
        self._admission = Admission(
            limits=limits, admitted=self._admitted, dropped=self._dropped, clock=time.monotonic
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._counts: Counter[str] = Counter()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._admission.open)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._loop is None:
            raise RuntimeError(f"the HTTP server did not start within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if not self._thread.is_alive() or loop is None or stopping is None:
            self._sock.close()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout=STOP_TIMEOUT_S)

    # -- the server's thread -----------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._on_loop_error)
        try:
            loop.run_until_complete(self._serve())
        finally:
            self._ready.set()
            loop.close()
            self._sock.close()

    async def _serve(self) -> None:
        self._stopping = stopping = asyncio.Event()
        self._loop = loop = asyncio.get_running_loop()
        self._sock.setblocking(False)  # noqa: FBT003 - the stdlib signature
        loop.add_reader(self._sock.fileno(), self._accept)
        self._ready.set()
        try:
            await stopping.wait()
        finally:
            loop.remove_reader(self._sock.fileno())
            self._admission.close_all()
            if self._tasks:  # they end on their aborted transports; a linger may take longer
                _, pending = await asyncio.wait(list(self._tasks), timeout=STOP_TIMEOUT_S / 4)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=STOP_TIMEOUT_S / 4)

    def _accept(self) -> None:
        """Accepts what is queued (a batch per turn of the loop). Over the cap the decision is
        made here, on the bare socket: a refused connection costs no transport, no task, and
        its descriptor is closed before the next accept."""
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause_accepting(exc)
                    return
                continue  # e.g. ECONNABORTED: that peer gave up
            sock.setblocking(False)  # noqa: FBT003
            self._admission.offer(sock)
        self._report_count()

    def _admitted(self, connection: Connection) -> None:
        task = asyncio.get_running_loop().create_task(self._serve_connection(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pause_accepting(self, exc: OSError) -> None:
        # Linux keeps reporting the listening socket readable: without a pause this spins.
        loop = asyncio.get_running_loop()
        self._counts["out_of_resources"] += 1
        if every_power_of_two(self._counts["out_of_resources"]):
            log.warning(
                "HTTP endpoint cannot accept (%s); pausing %.0f s (%d times so far)",
                exc.strerror,
                ACCEPT_PAUSE_S,
                self._counts["out_of_resources"],
            )
        fd = self._sock.fileno()
        loop.remove_reader(fd)
        loop.call_later(ACCEPT_PAUSE_S, loop.add_reader, fd, self._accept)

    async def _serve_connection(self, connection: Connection) -> None:
        try:
            reader, writer = await asyncio.open_connection(
                sock=connection.sock, limit=self._limits.head.max_head_bytes
            )
        except OSError:
            connection.sock.close()
            self._admission.closed(connection)
            self._report_count()
            return
        connection.writer = writer
        # asyncio's socket transport reads up to 256 KiB at a time (`max_size`, a class
        # attribute) before the reader's limit pauses it: a peer sending a huge head would hold
        # that much per connection. A read the size of the head limit keeps it to a few times
        # the limit (a transport without the attribute simply ignores it).
        writer.transport.max_size = self._limits.head.max_head_bytes  # type: ignore[attr-defined]
        try:
            await self._converse(connection, reader, writer)
        finally:
            self._admission.closed(connection)
            self._report_count()
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()
            else:
                writer.close()

    async def _converse(
        self,
        connection: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        limits = self._limits
        # drain() then returns only once the answer is in the kernel: a peer that does not
        # read holds no buffer of ours beyond the write deadline.
        writer.transport.set_write_buffer_limits(high=0)
        deadline = connection.since + limits.request_timeout_s  # since the accept
        while True:
            connection.waiting = True
            timeout = max(0.0, deadline - time.monotonic())
            try:
                request = await asyncio.wait_for(read_request(reader, limits=limits.head), timeout)
            except asyncio.TimeoutError:
                if connection.served == 0:  # a kept-alive connection going idle is normal
                    self._dropped("timeout")
                    error = HttpError(HTTPStatus.REQUEST_TIMEOUT, "request not complete in time")
                    writer.write(error.response.encode(head_only=False, close=True))
                return
            except PeerClosedError:
                return
            except HttpError as error:
                self._dropped("bad_request")
                if await self._send(writer, error.response, head_only=False, close=True):
                    await _linger(reader, writer)
                return
            connection.waiting = connection.ready = False
            connection.served += 1
            close = not request.keep_alive or connection.served >= limits.max_requests
            response = self._respond(request)
            sent = await self._send(
                writer, response, head_only=request.method == "HEAD", close=close
            )
            if close or not sent:
                return
            connection.since = time.monotonic()
            deadline = connection.since + limits.idle_timeout_s

    def _respond(self, request: Request) -> Response:
        handler = self._routes.get(request.path, self._not_found)
        try:
            return handler(request)
        except Exception:
            self._counts["handler_error"] += 1
            if every_power_of_two(self._counts["handler_error"]):
                log.exception(
                    "HTTP handler for %s failed (%d times so far)",
                    request.path,
                    self._counts["handler_error"],
                )
            return Response(status=HTTPStatus.INTERNAL_SERVER_ERROR, body=b"internal error\n")

    async def _send(
        self, writer: asyncio.StreamWriter, response: Response, *, head_only: bool, close: bool
    ) -> bool:
        writer.write(response.encode(head_only=head_only, close=close))
        try:
            await asyncio.wait_for(writer.drain(), self._limits.write_timeout_s)
        except asyncio.TimeoutError:
            self._dropped("timeout")
            writer.transport.abort()
            return False
        except ConnectionError:
            return False
        return True

    def _dropped(self, reason: str) -> None:
        self._counts[reason] += 1
        if self._events is not None:
            self._events.dropped(reason)
        if reason in ("over_cap", "evicted") and every_power_of_two(self._counts[reason]):
            log.warning(
                "HTTP endpoint at its cap of %d connections: %s %d so far",
                self._limits.max_connections,
                "closed a new connection at once," if reason == "over_cap"
                else "closed the connection that waited longest for its request,",
                self._counts[reason],
            )  # fmt: skip

    def _report_count(self) -> None:
        if self._events is not None:
            self._events.connections(len(self._admission.open))

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # E.g. "socket.accept() out of system resource" when the process is out of
        # descriptors: asyncio then pauses accepting for a second instead of spinning.
        self._counts["loop_error"] += 1
        if every_power_of_two(self._counts["loop_error"]):
            exc = context.get("exception")
            log.warning(
                "HTTP endpoint: %s%s (%d times so far)",
                context.get("message", "error"),
                f": {exc}" if exc is not None else "",
                self._counts["loop_error"],
            )


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an error answer: half-close, then read (bounded) what the peer still sends."""
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def discard() -> None:
        budget = LINGER_BYTES
        while budget > 0:
            data = await reader.read(min(budget, 64 * 1024))
            if not data:
                return
            budget -= len(data)

    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
        await asyncio.wait_for(discard(), LINGER_S)


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port: IPv4 if the host has an IPv4 address (as the
    wsgiref server bound, so `localhost` stays 127.0.0.1), else IPv6."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = min(found, key=lambda info: info[0] != socket.AF_INET)
    return socket.create_server(address[:2], family=family, backlog=LISTEN_BACKLOG)
