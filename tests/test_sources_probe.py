"""The network probe against local socket servers: answered, refused, silent, not RTSP."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

from edge_facedet.sources.probe import ProbeError, probe

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET = "Pr0beSecret"  # noqa: S105 - a fake credential the tests hunt for


class OneShotServer:
    """Accepts one connection on loopback, records what it received, sends `reply`."""

    def __init__(self, *, reply: bytes | None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._reply = reply
        self.received = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with connection:
            connection.settimeout(2.0)
            if self._reply is None:
                time.sleep(1.0)  # connected, never answers
                return
            while b"\r\n\r\n" not in self.received:
                chunk = connection.recv(1024)
                if not chunk:
                    break
                self.received += chunk
            connection.sendall(self._reply)

    def close(self) -> None:
        self._thread.join(3.0)
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[type[OneShotServer]]:
    servers: list[OneShotServer] = []

    class Tracked(OneShotServer):
        def __init__(self, *, reply: bytes | None) -> None:
            super().__init__(reply=reply)
            servers.append(self)

    yield Tracked
    for server in servers:
        server.close()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as free:
        free.bind(("127.0.0.1", 0))
        return int(free.getsockname()[1])


def test_an_rtsp_server_answering_options_passes(serve: type[OneShotServer]) -> None:
    server = serve(reply=b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n\r\n")
    probe(f"rtsp://admin:{SECRET}@127.0.0.1:{server.port}/stream1", timeout_s=2.0)
    request = server.received.decode()
    assert request.startswith(f"OPTIONS rtsp://127.0.0.1:{server.port}/stream1 RTSP/1.0\r\n")
    assert "CSeq: 1\r\n" in request
    assert SECRET not in request and "admin" not in request  # credentials stay home


def test_an_rtsp_url_without_a_path_asks_for_the_root(serve: type[OneShotServer]) -> None:
    server = serve(reply=b"RTSP/1.0 200 OK\r\n\r\n")
    probe(f"rtsp://127.0.0.1:{server.port}", timeout_s=2.0)
    assert server.received.startswith(f"OPTIONS rtsp://127.0.0.1:{server.port}/ RTSP/1.0".encode())


def test_a_server_that_is_not_rtsp_fails_the_probe(serve: type[OneShotServer]) -> None:
    server = serve(reply=b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(ProbeError, match=r"^not an RTSP server: no RTSP reply to OPTIONS$"):
        probe(f"rtsp://127.0.0.1:{server.port}/cam", timeout_s=2.0)


def test_a_silent_server_fails_after_the_timeout(serve: type[OneShotServer]) -> None:
    server = serve(reply=None)
    started = time.monotonic()
    with pytest.raises(ProbeError, match=r"^no answer; gave up after 0\.\d s$"):
        probe(f"rtsp://u:{SECRET}@127.0.0.1:{server.port}/cam", timeout_s=0.3)
    assert 0.25 <= time.monotonic() - started < 1.0


def test_a_refused_connection_names_the_reason_and_no_url() -> None:
    port = closed_port()
    with pytest.raises(ProbeError) as raised:
        probe(f"rtsp://u:{SECRET}@127.0.0.1:{port}/cam", timeout_s=1.0)
    message = str(raised.value)
    assert message.startswith("Connection refused; gave up after "), message
    assert SECRET not in message and str(port) not in message


def test_other_connected_schemes_are_probed_by_the_connect_alone(
    serve: type[OneShotServer],
) -> None:
    server = serve(reply=None)  # accepts and says nothing, as an HTTP server waits for a request
    started = time.monotonic()
    probe(f"http://127.0.0.1:{server.port}/video.mjpg", timeout_s=2.0)
    assert time.monotonic() - started < 0.5
    with pytest.raises(ProbeError, match="Connection refused"):
        probe(f"rtmp://127.0.0.1:{closed_port()}/live", timeout_s=1.0)


@pytest.mark.parametrize(
    "url",
    [
        "udp://127.0.0.1:1/stream",  # connectionless
        "rtsp://127.0.0.1:99999999/cam",  # a malformed port: the decoder reports it
        "tcp:///no-host",
    ],
)
def test_what_cannot_be_probed_is_left_to_the_decoder(url: str) -> None:
    probe(url, timeout_s=0.1)
