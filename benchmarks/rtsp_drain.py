"""RTSP clients that play a stream and throw its bytes away, for A/B runs that must keep the
camera side's work equal.

The bench's RTSP server runs a mount's pipeline (file read, parse, RTP payloading) only while
a client plays it, on the same two cores as the service. An arm that reads a camera's main
stream therefore also makes the server work more (0.27 cores for 16 720p mounts on
2026-12-06), which a real camera does on its own hardware. `Drains` plays those mounts in the
other arm too, as cheaply as a client can: RTP over the RTSP connection (interleaved TCP),
read in large chunks and discarded, no parsing past the RTSP replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Drains", "drain"]

REPLY_TIMEOUT_S = 10.0
KEEPALIVE_S = 20.0  # under gst-rtsp-server's 60 s session timeout
CHUNK = 256 * 1024


class RtspError(RuntimeError):
    """The server refused or did not answer a request."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._cseq = 0
        self.session: str | None = None
        self.received = 0

    async def request(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """Send one request; return the reply's headers (lower-case) and body (`""`)."""
        self._cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self._cseq}"]
        if self.session is not None:
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        return await asyncio.wait_for(self._reply(method), REPLY_TIMEOUT_S)

    def send(self, method: str, url: str) -> None:
        """A request whose reply is read (and dropped) with the stream's bytes."""
        self._cseq += 1
        session = f"Session: {self.session}\r\n" if self.session else ""
        head = f"{method} {url} RTSP/1.0\r\nCSeq: {self._cseq}\r\n{session}\r\n"
        self._writer.write(head.encode())

    async def _reply(self, method: str) -> dict[str, str]:
        status = (await self._reader.readline()).decode(errors="replace").strip()
        headers: dict[str, str] = {}
        while line := (await self._reader.readline()).decode(errors="replace").strip():
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await self._reader.readexactly(length) if length else b""
        headers[""] = body.decode(errors="replace")
        if status.split()[1:2] != ["200"]:
            raise RtspError(f"{method}: {status!r}")
        return headers

    async def discard_forever(self) -> None:
        while data := await self._reader.read(CHUNK):
            self.received += len(data)


async def drain(url: str, *, stop: asyncio.Event) -> int:
    """Play `url` until `stop`; return the bytes received after PLAY (RTP, RTCP, replies)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 554)
    connection = _Connection(reader, writer)
    try:
        described = await connection.request("DESCRIBE", url, {"Accept": "application/sdp"})
        base = described.get("content-base", url).rstrip("/")
        controls = [
            line.split(":", 1)[1].strip()
            for line in described[""].splitlines()
            if line.startswith("a=control:") and line.strip() != "a=control:*"
        ]
        track = controls[0] if controls else ""
        track_url = track if "://" in track else f"{base}/{track}" if track else base
        setup = await connection.request(
            "SETUP", track_url, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"}
        )
        connection.session = setup.get("session", "").split(";")[0] or None
        await connection.request("PLAY", base, {"Range": "npt=0.000-"})
        reading = asyncio.create_task(connection.discard_forever())
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), KEEPALIVE_S)
            if not stop.is_set():
                connection.send("GET_PARAMETER", base)
        reading.cancel()
        await asyncio.wait((reading,))
        return connection.received
    finally:
        writer.close()


class Drains:
    """`urls` played and discarded in a thread of their own, for the life of the block."""

    def __init__(self, urls: Sequence[str]) -> None:
        self._urls = list(urls)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._errors: list[BaseException] = []
        self.received: dict[str, int] = {}
        """Bytes each url delivered, once the block has ended."""
        self._thread = threading.Thread(target=self._run, name="rtsp-drains", daemon=True)

    def __enter__(self) -> Drains:
        self._thread.start()
        self._ready.wait(REPLY_TIMEOUT_S)
        return self

    def __exit__(self, *_: object) -> None:
        if self._stop is not None and not self._loop.is_closed():
            # The loop may already be closed: with no urls there was nothing to wait for.
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(REPLY_TIMEOUT_S)
        if self._errors:
            raise RuntimeError(f"RTSP drain failed: {self._errors[0]!r}")

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._ready.set()
        results = await asyncio.gather(
            *(drain(url, stop=self._stop) for url in self._urls), return_exceptions=True
        )
        self._errors = [r for r in results if isinstance(r, BaseException)]
        self.received = {
            url: r for url, r in zip(self._urls, results, strict=True) if isinstance(r, int)
        }
