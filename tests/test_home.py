"""No home directory, still a service; a home that is needed and missing: one line, exit 2.

The CLI runs as a uid with no entry in the user database and without HOME, which is what
systemd's DynamicUser= gets on a host without libnss-systemd, and with HOME=/ (not writable),
what it gets with it. OpenVINO's telemetry used to need the home directory at import: the
first failed with "Could not determine home directory" (exit 1, restarted toward the start
limit), the second logged three warnings about writing to `/` at every start.
"""

from __future__ import annotations

import io
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from edge_facedet.home import exit_on_missing_home
from tests.support.paths import FACE_VIDEO
from tests.support.service import edge_facedet_command

if TYPE_CHECKING:
    from collections.abc import Iterator

# What the environment would otherwise give the child a models root or a home through.
_UNSET = ("HOME", "EDGE_FACEDET_MODELS", "XDG_DATA_HOME")


def unknown_uid() -> int:
    uid = 54321
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


@pytest.fixture(scope="module")
def as_unknown_user() -> list[str]:
    """The command prefix that runs a program as a uid the user database does not know."""
    uid = unknown_uid()
    if os.geteuid() == 0:
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    prefix = ["unshare", "--user", f"--map-user={uid}", f"--map-group={uid}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"running as an unknown uid needs root or user namespaces: {probe.stderr}")
    return prefix


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A folder the unknown uid may read (pytest's tmp_path is private to this user)."""
    directory = Path(tempfile.mkdtemp(prefix="edge-facedet-home-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def run_as(
    prefix: list[str], *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if key not in _UNSET}
    environ.update(env or {}, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [*prefix, *edge_facedet_command(), *map(str, args)],
        env=environ,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_unknown_user_really_has_no_home_directory(as_unknown_user: list[str]) -> None:
    # The precondition of the tests below: Python cannot find a home for this process.
    environ = {key: value for key, value in os.environ.items() if key not in _UNSET}
    result = subprocess.run(
        [*as_unknown_user, sys.executable, "-c", "import pathlib; pathlib.Path.home()"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "Could not determine home directory" in result.stderr


def test_model_info_runs_without_a_home_directory(
    as_unknown_user: list[str], model_root: Path
) -> None:
    result = run_as(as_unknown_user, "model", "info", "--models-dir", model_root, "--device", "CPU")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert '"execution_devices"' in result.stdout


def test_model_info_is_quiet_with_an_unwritable_home(
    as_unknown_user: list[str], model_root: Path
) -> None:
    result = run_as(
        as_unknown_user,
        "model", "info", "--models-dir", model_root, "--device", "CPU",
        env={"HOME": "/"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("command", ["model info", "run"])
def test_a_missing_home_that_is_needed_is_one_line_and_exit_2(
    as_unknown_user: list[str], readable_dir: Path, command: str
) -> None:
    # No --models-dir, no model.dir, no EDGE_FACEDET_MODELS: the default models root is
    # under the home directory, which cannot be determined.
    config = readable_dir / "config.yaml"
    config.write_text(
        yaml.safe_dump({"cameras": [{"id": "clip", "url": str(FACE_VIDEO)}]}, sort_keys=False)
    )
    config.chmod(0o644)
    args = ["model", "info"] if command == "model info" else ["run", "--config", str(config)]
    result = run_as(as_unknown_user, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "HOME is not set" in lines[0]
    assert "EDGE_FACEDET_MODELS" in lines[0]


def test_the_guard_turns_only_a_missing_home_into_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    with pytest.raises(RuntimeError, match="unrelated"), exit_on_missing_home(code=2, err=err):
        raise RuntimeError("unrelated")
    assert err.getvalue() == ""

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with pytest.raises(SystemExit) as exit_info, exit_on_missing_home(code=2, err=err):
        Path.home()
    assert exit_info.value.code == 2
    assert err.getvalue().count("\n") == 1
    assert "HOME is not set" in err.getvalue()
