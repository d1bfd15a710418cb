"""The sd_notify protocol on a real datagram socket, and the unit file as systemd sees it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from edge_facedet.systemd import SystemdNotifier
from tests.support.paths import REPO

UNIT = REPO / "systemd" / "edge-facedet.service"


def receive_all(sock: socket.socket) -> list[str]:
    messages = []
    sock.settimeout(0.2)
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            return messages


def test_notifier_sends_each_message_to_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": str(path)})
        assert notifier.enabled
        notifier.ready("2/2 cameras streaming")
        notifier.watchdog()
        notifier.status("1/2 cameras streaming")
        notifier.stopping()
        notifier.close()
        assert receive_all(server) == [
            "READY=1\nSTATUS=2/2 cameras streaming",
            "WATCHDOG=1",
            "STATUS=1/2 cameras streaming",
            "STOPPING=1",
        ]


def test_notifier_uses_the_abstract_namespace_for_at_addresses() -> None:
    name = f"edge-facedet-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        SystemdNotifier(environ={"NOTIFY_SOCKET": "@" + name}).ready()
        assert receive_all(server) == ["READY=1"]


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = SystemdNotifier(environ={})
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog()
    assert notifier.watchdog_interval_s is None


def test_watchdog_interval_is_half_the_timeout_for_this_process_only() -> None:
    mine = SystemdNotifier(environ={"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval_s == 30.0
    other = SystemdNotifier(environ={"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval_s is None


def test_a_vanished_manager_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    notifier.ready()  # logs a warning, must not raise


needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd
def test_unit_exposure_is_at_most_2_5() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5


@needs_systemd
def test_unit_verifies_clean(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's installed command.
    executable = shutil.which("edge-facedet") or str(REPO / ".venv" / "bin" / "edge-facedet")
    assert Path(executable).exists()
    unit = tmp_path / "edge-facedet.service"
    unit.write_text(UNIT.read_text().replace("/opt/edge-facedet/venv/bin/edge-facedet", executable))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if "edge-facedet.service" in line]
    assert problems == []
