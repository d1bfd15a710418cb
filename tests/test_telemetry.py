"""No command sends anything anywhere or writes under the home directory (OpenVINO telemetry).

Every command that loads OpenVINO runs as a user runs it, a subprocess of the CLI, with a
temporary HOME, the HTTP(S) proxy variables pointing at a local listener (so an attempt
reaches nobody outside, and is seen), and an audit hook installed by a `sitecustomize` on
PYTHONPATH that records every socket connect, name lookup and urllib request of the process,
whatever thread makes it. Without the opt-out (edge_facedet/telemetry.py), `import openvino`
writes `~/intel/openvino_telemetry`-family files (a client id, a usage counter) and sends a
"general_import" event to Google Analytics.
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest

from tests.support.paths import FACE_VIDEO
from tests.support.service import ServiceProcess, run_cli, service_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.support.broker import BrokerAddress

_AUDIT_HOOK = """
import os, sys

_LOG = os.environ["EDGE_FACEDET_TEST_NET_LOG"]
_EVENTS = {"socket.connect", "socket.sendto", "socket.getaddrinfo", "urllib.Request"}


def _record(event, args):
    if event not in _EVENTS:
        return
    target = args[1] if event in ("socket.connect", "socket.sendto") else args[0]
    if event == "socket.getaddrinfo":
        target = (args[0], args[1])
    with open(_LOG, "a") as log:
        log.write(repr((event, target if isinstance(target, (str, tuple)) else repr(target))))
        log.write("\\n")


sys.addaudithook(_record)
"""

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
PROXY_VARIABLES = (*_PROXIES, *(name.lower() for name in _PROXIES))


class Watch:
    """The environment that sees a network attempt or a file in HOME, and what it saw."""

    def __init__(self, directory: Path) -> None:
        self.home = directory / "home"
        self.home.mkdir()
        hook = directory / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(_AUDIT_HOOK)
        self.log = directory / "network.log"
        self.proxy = socket.create_server(("127.0.0.1", 0))
        self.proxy.setblocking(False)
        proxy_url = f"http://127.0.0.1:{self.proxy.getsockname()[1]}"
        self.env = {
            "HOME": str(self.home),
            "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
            "EDGE_FACEDET_TEST_NET_LOG": str(self.log),
            "NO_PROXY": "",
            "no_proxy": "",
            # The telemetry package declines by itself on CI machines; not for us to rely on.
            "CI": "",
            "TF_BUILD": "",
            "JENKINS_URL": "",
            **dict.fromkeys(PROXY_VARIABLES, proxy_url),
        }

    def attempts(self) -> list[tuple[str, Any]]:
        """Network events to anything but loopback or a UNIX socket, and any urllib request."""
        if not self.log.exists():
            return []
        events = [ast.literal_eval(line) for line in self.log.read_text().splitlines()]
        return [(event, target) for event, target in events if not _local(event, target)]

    def proxied(self) -> bool:
        try:
            connection, _ = self.proxy.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True

    def home_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.home)) for p in self.home.rglob("*"))

    def assert_silent(self, what: str) -> None:
        assert self.attempts() == [], f"{what}: network attempts"
        assert not self.proxied(), f"{what}: connected to the proxy"
        assert self.home_files() == [], f"{what}: wrote under HOME"

    def close(self) -> None:
        self.proxy.close()


def _local(event: str, target: Any) -> bool:
    if event == "urllib.Request":
        return False
    if isinstance(target, str):  # AF_UNIX: the notify socket
        return True
    if isinstance(target, tuple) and target:
        host = target[0]
        return host is None or (isinstance(host, (str, bytes)) and _loopback(host))
    return False


def _loopback(host: str | bytes) -> bool:
    name = host.decode() if isinstance(host, bytes) else host
    return name in LOOPBACK or name.startswith("127.")


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[Watch]:
    watching = Watch(tmp_path)
    yield watching
    watching.close()


def test_the_watch_sees_openvino_telemetry_when_it_is_not_disabled(watch: Watch) -> None:
    """The same environment with OpenVINO imported directly: the attempt and the files show."""
    code = "import openvino, openvino_telemetry; print(openvino_telemetry.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **watch.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert watch.home_files(), "the telemetry package wrote nothing under HOME"
    assert any(event == "urllib.Request" for event, _ in watch.attempts()), watch.attempts()
    assert watch.proxied()


def test_importing_the_package_switches_telemetry_off_before_openvino_loads() -> None:
    # Importing edge_facedet blocks the telemetry package (a None entry) and loads no part of
    # OpenVINO, so whatever imports OpenVINO later in the process gets the no-op stub.
    code = (
        "import sys, edge_facedet.cli; "
        "print(sorted((m, sys.modules[m] is None) for m in sys.modules if 'openvino' in m))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[('openvino_telemetry', True)]"


def test_model_info_sends_and_writes_nothing(watch: Watch, model_root: Path) -> None:
    args = ("model", "info", "--models-dir", model_root, "--device", "CPU")
    result = run_cli(*args, env=watch.env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    watch.assert_silent("model info")


def test_detect_sends_and_writes_nothing(watch: Watch, model_root: Path, tmp_path: Path) -> None:
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((240, 320, 3), np.uint8))
    result = run_cli("detect", image, "--models-dir", model_root, "--device", "CPU", env=watch.env)
    assert result.returncode == 0, result.stderr
    watch.assert_silent("detect")


def test_eval_sends_and_writes_nothing(watch: Watch, model_root: Path, tmp_path: Path) -> None:
    images = tmp_path / "images" / "0--Synthetic"
    images.mkdir(parents=True)
    face = np.zeros((480, 640, 3), np.uint8)
    face[120:260, 100:200] = 255
    cv2.imwrite(str(images / "0.png"), face)
    gt = tmp_path / "gt.txt"
    gt.write_text("0--Synthetic/0.png\n1\n100 120 100 140 0 0 0 0 0 0\n")
    result = run_cli(
        "eval",
        "--images", tmp_path / "images",
        "--gt", gt,
        "--models-dir", model_root,
        "--device", "CPU",
        "--no-progress",
        env=watch.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    watch.assert_silent("eval")


def test_the_service_sends_and_writes_nothing(
    watch: Watch,
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    tmp_path: Path,
) -> None:
    assert mqtt_broker.host in LOOPBACK
    config = service_config(
        node_id="telemetry-check",
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=[{"id": "clip", "url": str(FACE_VIDEO), "loop": True}],
    )
    service = ServiceProcess(directory=tmp_path / "svc", config=config, env=watch.env)
    try:
        service.start()
        service.wait_ready()
        # The telemetry package sends from a thread of its own: give one a moment to try.
        time.sleep(1.0)
        code, _ = service.terminate()
    finally:
        service.close()
    assert code == 0, service.log()
    watch.assert_silent("run")
