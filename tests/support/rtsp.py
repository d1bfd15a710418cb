"""Pytest fixtures for camera tests: cached H.264 clips and real GStreamer RTSP servers.

`h264_clip` is a session-wide `ClipMaker`. `rtsp_server` is a factory: each call starts
`tests/support/rtsp_server.py` under the system python (which has GStreamer's introspection
bindings; the venv does not) on a free port, waits for its READY line and returns a handle
that can kill, restart on the same port, pause (SIGSTOP, a stall with open sockets) and resume
the server. Every server is stopped at the end of the test, whatever happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.media import ClipMaker
from tests.support.net import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
READY_TIMEOUT_S = 15.0


class RtspServer:
    """One running (or stopped) RTSP server process with its mounts and port."""

    def __init__(self, *, mounts: dict[str, Path], port: int) -> None:
        self.mounts = dict(mounts)
        self.port = port
        self._process: subprocess.Popen[str] | None = None
        self.start()

    def url(self, mount: str, *, userinfo: str = "") -> str:
        if mount not in self.mounts:
            raise KeyError(f"no mount {mount!r}; have {sorted(self.mounts)}")
        credentials = f"{userinfo}@" if userinfo else ""
        return f"rtsp://{credentials}127.0.0.1:{self.port}/{mount}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("server is not running")
        return self._process.pid

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("server already running")
        argv = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port)]
        for name, clip in self.mounts.items():
            argv += ["--mount", f"{name}={clip}"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._process = process
        ready_line = _read_line_within(process=process, timeout_s=READY_TIMEOUT_S)
        if ready_line.split() != ["READY", str(self.port)]:
            self.kill()
            stderr = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"RTSP server did not start: {ready_line!r} {stderr[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: the server vanishes like a camera losing power (sockets reset)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown."""
        self._end(signal.SIGTERM)

    def restart(self) -> None:
        """Kill (if running) and start again on the same port."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is sent, a stalled camera."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def _end(self, signum: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signum)
            # A paused process keeps SIGTERM pending until it runs again.
            os.kill(process.pid, signal.SIGCONT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _read_line_within(*, process: subprocess.Popen[str], timeout_s: float) -> str:
    """The first stdout line, or "" if none arrives in time (a reader thread: no select on
    text pipes with buffering)."""
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        lines.append(stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    return lines[0].strip() if lines else ""


@pytest.fixture(scope="session")
def h264_clip(tmp_path_factory: pytest.TempPathFactory) -> ClipMaker:
    """Session-wide clip factory; see `tests.support.media.ClipMaker`. pytest-xdist's workers
    share one cache (beside their own temporary folders): clips are written atomically, so a
    clip two workers make at once is made twice at worst, never read half-written."""
    if os.environ.get("PYTEST_XDIST_WORKER") is not None:
        return ClipMaker(cache_dir=tmp_path_factory.getbasetemp().parent / "clips")
    return ClipMaker(cache_dir=tmp_path_factory.mktemp("clips"))


@pytest.fixture
def rtsp_server() -> Iterator[Callable[..., RtspServer]]:
    """Factory: `rtsp_server(mounts={"cam": clip_path})` -> a started `RtspServer`."""
    servers: list[RtspServer] = []

    def start(*, mounts: dict[str, Path], port: int | None = None) -> RtspServer:
        server = RtspServer(mounts=mounts, port=port if port is not None else free_port())
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()
