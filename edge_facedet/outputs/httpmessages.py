"""HTTP/1.1 messages for the service's own endpoint: a request head read within limits, and
responses written in full.

Only what a scraper, a health check and a browser need: GET and HEAD, origin-form targets,
no request bodies beyond a few bytes, no chunked encoding. Anything else is answered with one
status line naming the problem and the connection is closed, so a peer that sends more than
the limits allow costs at most the limits. `httpserver.py` applies the time limits.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import unquote

if TYPE_CHECKING:
    from collections.abc import Mapping

ALLOWED_METHODS = ("GET", "HEAD")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_BLANK = (b"\r\n", b"\n")


@dataclass(frozen=True)
class HeadLimits:
    """What one request may send before its answer (the server's `HttpLimits` holds these)."""

    max_head_bytes: int = 16 * 1024
    max_header_lines: int = 64
    max_body_bytes: int = 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str = ""
    version: str = "HTTP/1.1"
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str:
        """The header's value ("" when absent); repeated headers are joined with ", "."""
        return self.headers.get(name.lower(), "")

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless asked not to; HTTP/1.0 closes it."""
        tokens = {token.strip().lower() for token in self.header("connection").split(",")}
        return self.version == "HTTP/1.1" and "close" not in tokens


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, *, head_only: bool, close: bool) -> bytes:
        """Status line, headers and (unless `head_only`: a HEAD request) the body."""
        lines = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


class HttpError(Exception):
    """A request the server answers with `status` and then closes the connection."""

    def __init__(
        self, status: HTTPStatus, detail: str, *, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(detail)
        self.response = Response(status=status, body=f"{detail}\n".encode(), headers=headers)


class PeerClosedError(Exception):
    """The peer closed (or reset) the connection before its request head was complete."""


async def read_request(reader: asyncio.StreamReader, *, limits: HeadLimits) -> Request:
    """One request head (and a small body, discarded), or HttpError / PeerClosedError.

    The reader's own `limit` must be `limits.max_head_bytes`: a line longer than that raises
    before it is buffered in full. The caller bounds the time this may take.
    """
    lines = await _read_head(reader, limits=limits)
    request = _parse(lines)
    if request.method not in ALLOWED_METHODS:
        raise HttpError(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "method not allowed; use GET or HEAD",
            headers=(("Allow", ", ".join(ALLOWED_METHODS)),),
        )
    await _discard_body(reader, request=request, limits=limits)
    return request


async def _read_head(reader: asyncio.StreamReader, *, limits: HeadLimits) -> list[bytes]:
    lines: list[bytes] = []
    total = 0
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _too_large(first_line=not lines) from None
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise PeerClosedError from exc
        total += len(line)
        if total > limits.max_head_bytes:
            raise _too_large(first_line=not lines)
        if line in _BLANK:
            if lines:
                return lines
            continue  # RFC 9112 2.2: blank lines before the request line are ignored
        if len(lines) > limits.max_header_lines:
            raise HttpError(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"more than {limits.max_header_lines} header lines",
            )
        lines.append(line)


def _too_large(*, first_line: bool) -> HttpError:
    if first_line:
        return HttpError(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")
    return HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")


def _parse(lines: list[bytes]) -> Request:
    parts = lines[0].rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _VERSION.fullmatch(parts[2]):
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = (part.decode("latin-1") for part in parts)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.rstrip(b"\r\n").partition(b":")
        # No whitespace before the colon and no folded lines: both are request-smuggling
        # vectors (RFC 9112 5.1, 5.2), and no client of this endpoint sends them.
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(HTTPStatus.BAD_REQUEST, "malformed header line")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if not target.startswith("/"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "request target must be a path")
    path, _, query = target.partition("?")
    return Request(
        method=method,
        path=unquote(path, encoding="latin-1"),
        query=query,
        version=version,
        headers=headers,
    )


async def _discard_body(
    reader: asyncio.StreamReader, *, request: Request, limits: HeadLimits
) -> None:
    if request.header("transfer-encoding"):
        raise HttpError(HTTPStatus.NOT_IMPLEMENTED, "request bodies are not accepted")
    declared = request.header("content-length")
    if not declared:
        return
    if not declared.isdigit():
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
    # Digits only; a number that long is over any limit (and never parsed in full).
    length = int(declared) if len(declared) <= 12 else limits.max_body_bytes + 1
    if length > limits.max_body_bytes:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
    try:
        await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise PeerClosedError from exc
