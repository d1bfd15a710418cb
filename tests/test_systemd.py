"""The sd_notify protocol on a real datagram socket, and the unit file as systemd sees it."""

from __future__ import annotations

import logging
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
    # Not "1": pytest is PID 1 in a container or PID namespace (deploy/fresh-debian-check.sh).
    not_mine = str(os.getpid() + 1)
    other = SystemdNotifier(environ={"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": not_mine})
    assert other.watchdog_interval_s is None


def test_a_vanished_manager_socket_does_not_raise_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = tmp_path / "gone.sock"
    notifier = SystemdNotifier(environ={"NOTIFY_SOCKET": str(gone)})
    with caplog.at_level(logging.WARNING, logger="edge_facedet.systemd"):
        notifier.ready()  # must not raise
        notifier.watchdog()  # the same failure again: no second line
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(gone) in warnings[0]


@pytest.fixture
def systemd_analyze() -> str:
    """systemd-analyze, which deploy/setup.sh installs: missing, it is a failure, not a skip."""
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is not installed: run deploy/setup.sh (package systemd)")
    return found


def unit_settings() -> dict[str, list[str]]:
    """The unit's KEY=VALUE lines (comments dropped), every value of each key in order."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith(("#", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_bounds_descriptors_threads_and_memory() -> None:
    # Issue 20, defect 1: a flood of connections or a leak fails this service, not the host.
    # The figures are argued in docs/containers.md; compose.yaml sets the same.
    settings = unit_settings()
    assert settings["LimitNOFILE"] == ["8192"]
    assert settings["TasksMax"] == ["512"]
    assert settings["MemoryMax"] == ["1G"]
    docs = (REPO / "docs" / "containers.md").read_text()
    for figure in ("LimitNOFILE=8192", "TasksMax=512", "MemoryMax=1G"):
        assert figure in docs


def test_unit_gives_the_dynamic_user_a_writable_home() -> None:
    # A DynamicUser= has no home (none without libnss-systemd, / with it): HOME is the
    # cache directory, the one place the service may write.
    settings = unit_settings()
    assert "HOME=%C/edge-facedet" in settings["Environment"]
    assert settings["CacheDirectory"] == ["edge-facedet"]
    assert settings["DynamicUser"] == ["yes"]


def test_unit_documentation_needs_no_man_pages() -> None:
    # `systemd-analyze verify` runs `man` for every man: link: no man-db, no clean verify.
    (documentation,) = unit_settings()["Documentation"]
    assert "man:" not in documentation
    # The project's own README (install.sh puts it there), not a dependency's site.
    assert documentation.split() == ["file:/opt/edge-facedet/README.md"]


def test_unit_exposure_is_at_most_2_5(systemd_analyze: str) -> None:
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5


@pytest.mark.parametrize("path", ["inherited", "without man"])
def test_unit_verifies_clean(tmp_path: Path, systemd_analyze: str, path: str) -> None:
    # verify checks that ExecStart exists: point it at this checkout's installed command.
    executable = shutil.which("edge-facedet") or str(REPO / ".venv" / "bin" / "edge-facedet")
    assert Path(executable).exists()
    unit = tmp_path / "edge-facedet.service"
    unit.write_text(UNIT.read_text().replace("/opt/edge-facedet/venv/bin/edge-facedet", executable))
    env = dict(os.environ)
    if path == "without man":
        # A fresh machine has no man-db (issue 19): nothing on PATH, so no `man` either.
        env["PATH"] = str(tmp_path / "empty")
    result = subprocess.run(
        [systemd_analyze, "verify", str(unit)], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if "edge-facedet.service" in line]
    assert problems == []
