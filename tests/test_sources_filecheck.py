"""The bounded pre-open check of a file camera's path, on real files, FIFOs and sockets."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

from edge_facedet.sources.filecheck import FileCheck, FileCheckError, file_path, inspect_file

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def test_a_regular_file_and_a_device_pass(tmp_path: Path) -> None:
    video = tmp_path / "camera.mp4"
    video.write_bytes(b"\0" * 10_000)
    inspect_file(str(video))
    inspect_file("/dev/null")  # a device is left to its decoder


def test_an_empty_file_passes(tmp_path: Path) -> None:
    """Whether an empty file is a video is the decoder's question, not the check's."""
    empty = tmp_path / "empty.mp4"
    empty.touch()
    inspect_file(str(empty))


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "camera.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        yield path


def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "camera.mp4"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(FileCheckError, match=r"^not a regular file \(a FIFO\)$"):
        FileCheck(path=str(fifo), name="check").run(timeout_s=5.0)
    assert time.monotonic() - started < 1.0


def test_sockets_directories_and_missing_files_are_named(tmp_path: Path, unix_socket: Path) -> None:
    with pytest.raises(FileCheckError, match=r"\(a socket\)"):
        inspect_file(str(unix_socket))
    with pytest.raises(FileCheckError, match=r"\(a directory\)"):
        inspect_file(str(tmp_path))
    with pytest.raises(FileCheckError, match=r"^No such file or directory$"):
        inspect_file(str(tmp_path / "missing.mp4"))


def test_file_urls_name_the_path_ffmpeg_opens() -> None:
    assert file_path("file:///srv/cam.mp4") == "///srv/cam.mp4"
    assert file_path("/srv/cam.mp4") == "/srv/cam.mp4"


def test_a_check_that_hangs_is_given_up_after_the_timeout_and_never_piles_up() -> None:
    """A hung mount (stood in for by a check that waits on an event): the reader waits the
    timeout, and while the first check is still blocked no second thread is started."""
    release = threading.Event()
    calls: list[str] = []

    def hung(path: str) -> None:
        calls.append(path)
        release.wait(10.0)

    check = FileCheck(path="/mnt/nfs/cam.mp4", name="cam-x-check", inspect=hung)
    started = time.monotonic()
    with pytest.raises(FileCheckError, match=r"did not answer; gave up after 0\.3 s"):
        check.run(timeout_s=0.3)
    assert 0.25 <= time.monotonic() - started < 2.0
    with pytest.raises(FileCheckError, match="has not answered an earlier check"):
        check.run(timeout_s=0.3)
    assert calls == ["/mnt/nfs/cam.mp4"]  # one blocked thread, not one per attempt
    assert [t.name for t in threading.enumerate()].count("cam-x-check") == 1

    release.set()
    deadline = time.monotonic() + 5.0
    while any(t.name == "cam-x-check" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    check.run(timeout_s=0.3)  # the mount answers again: checks run again
    assert len(calls) == 2
