"""A camera with a main stream and a substream: `rtsp_pair_server.py` in a subprocess.

`RtspPair(main=clip, sub=clip)` starts the server (system python, like `rtsp.RtspServer`)
on a free port and waits for its READY line; `url("main")` and `url("sub")` are the two
renditions, live from one producer (frame i of both shows one moment, and both streams'
RTCP sender reports agree). `started` is the wall-clock time the producer started: frame i
of both clips is sent at about `started + i / fps`.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.support.net import free_port

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_pair_server.py")
READY_TIMEOUT_S = 15.0


class RtspPair:
    """One running pair server; `kill()` ends both renditions at once."""

    def __init__(self, *, main: Path, sub: Path, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        argv = [
            SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port),
            "--main", str(main), "--sub", str(sub),
        ]  # fmt: skip
        # GStreamer's warnings go to a file: a pipe nobody reads could fill and stall it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by kill()
        self._process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        line = _first_line(self._process, timeout_s=READY_TIMEOUT_S)
        self.started = time.time()
        if line.split() != ["READY", str(self.port)]:
            self._stderr.seek(0)
            stderr = self._stderr.read().decode(errors="replace")
            self.kill()
            raise RuntimeError(f"RTSP pair server did not start: {line!r} {stderr[-2000:]}")

    def url(self, rendition: str) -> str:
        if rendition not in {"main", "sub"}:
            raise KeyError(rendition)
        return f"rtsp://127.0.0.1:{self.port}/{rendition}"

    @property
    def pid(self) -> int:
        return self._process.pid

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._stderr.close()


def _first_line(process: subprocess.Popen[str], *, timeout_s: float) -> str:
    lines: list[str] = []
    stdout = process.stdout
    if stdout is None:
        return ""

    def read() -> None:
        lines.append(stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    return lines[0].strip() if lines else ""
