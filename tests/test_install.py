"""deploy/install.sh, run for real into a temporary --root (a real venv, pip, the model mirror).

One installation is shared by the module (a venv install takes ~20 s); the tests run in file
order against it: fresh layout, a no-op second run, an operator's config kept, uninstall.
A non-default --prefix/--etc proves the unit and starter config follow the chosen paths.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import yaml

from edge_facedet import __version__
from tests.support.paths import MODEL_MIRROR, REPO

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

INSTALL = REPO / "deploy" / "install.sh"
PREFIX = "/opt/efd-test"
ETC = "/etc/efd-test"


@dataclass(frozen=True)
class Installed:
    root: Path
    first_output: str

    @property
    def prefix(self) -> Path:
        return self.root / PREFIX.lstrip("/")

    @property
    def etc(self) -> Path:
        return self.root / ETC.lstrip("/")

    @property
    def cli(self) -> Path:
        return self.prefix / "venv" / "bin" / "edge-facedet"

    @property
    def unit(self) -> Path:
        return self.root / "etc" / "systemd" / "system" / "edge-facedet.service"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The installed CLI must not write bytecode while the tests compare snapshots.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("EDGE_FACEDET_MODELS", None)
    return env


def run_install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [
            "bash",
            str(INSTALL),
            "--root",
            str(root),
            "--prefix",
            PREFIX,
            "--etc",
            ETC,
            "--no-systemd",
            "--model-mirror",
            str(MODEL_MIRROR),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"install.sh {extra} failed:\n{result.stdout}\n{result.stderr}"
    return result


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under root: (mtime ns, size, mode); symlinks themselves, not their targets."""
    found: dict[str, tuple[int, int, int]] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(directory, name)  # noqa: PTH118 - os.walk yields strings
            info = os.lstat(path)
            found[os.path.relpath(path, root)] = (info.st_mtime_ns, info.st_size, info.st_mode)
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install-root")
    result = run_install(root)
    return Installed(root=root, first_output=result.stdout)


def test_install_script_is_shellcheck_clean() -> None:
    result = subprocess.run(
        ["shellcheck", str(INSTALL)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_fresh_install_layout(installed: Installed) -> None:
    version = subprocess.run(
        [str(installed.cli), "--version"], capture_output=True, text=True, env=_env(), check=True
    )
    assert version.stdout.strip() == f"edge-facedet {__version__}"
    # A real copy, not an editable install pointing back into the checkout.
    # (cwd elsewhere: `python -c` imports from the current directory first.)
    code = "import edge_facedet; print(edge_facedet.__file__)"
    site = subprocess.run(
        [str(installed.prefix / "venv/bin/python"), "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
        cwd=installed.root,
    )
    assert site.stdout.strip().startswith(str(installed.prefix / "venv"))

    for precision in ("FP16-INT8", "FP16"):
        xml = installed.prefix / "models/intel/face-detection-0204" / precision
        assert (xml / "face-detection-0204.xml").is_file()
        assert (xml / "face-detection-0204.bin").is_file()

    credentials = installed.etc / "credentials"
    assert credentials.is_dir()
    assert credentials.stat().st_mode & 0o777 == 0o700
    config = installed.etc / "config.yaml"
    # DynamicUser= must read it; secrets live in credentials/, never in this file.
    assert config.stat().st_mode & 0o777 == 0o644
    assert (installed.etc / "config.example.yaml").read_bytes() == (
        REPO / "config" / "example.yaml"
    ).read_bytes()

    # Documented: the starter is valid but its only camera is disabled until edited.
    check = subprocess.run(
        [str(installed.cli), "check-config", str(config)],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "cameras: 0 enabled, 1 disabled" in check.stdout
    assert f"({PREFIX}/models)" in check.stdout
    starter = yaml.safe_load(config.read_text())
    assert starter["cameras"][0]["enabled"] is False
    assert "enabled: false" in config.read_text()
    assert "To do:" in config.read_text()
    # LoadCredential= of a directory names each file's credential <id>_<file name>.
    assert "{credential: edge-facedet_mqtt-password}" in config.read_text()

    unit = installed.unit.read_text()
    assert f"ExecStart={PREFIX}/venv/bin/edge-facedet run --config {ETC}/config.yaml" in unit
    assert f"Environment=EDGE_FACEDET_MODELS={PREFIX}/models" in unit
    assert f"LoadCredential=edge-facedet:{ETC}/credentials" in unit
    assert "/opt/edge-facedet" not in unit
    assert "/etc/edge-facedet" not in unit
    assert installed.unit.stat().st_mode & 0o777 == 0o644
    # Nothing outside the chosen paths.
    assert sorted(p.name for p in installed.root.iterdir()) == ["etc", "opt"]


def test_second_run_changes_nothing(installed: Installed) -> None:
    before = snapshot(installed.root)
    assert len(before) > 100  # the venv is in it
    result = run_install(installed.root)
    after = snapshot(installed.root)
    assert after == before
    assert "up to date" in result.stdout
    assert "keeping existing" in result.stdout


def test_existing_config_is_never_overwritten(installed: Installed) -> None:
    config = installed.etc / "config.yaml"
    operator_config = "node_id: my-own\ncameras:\n  - id: gate\n    url: /dev/video0\n"
    config.write_text(operator_config)
    os.utime(config, ns=(1_000_000_000, 1_000_000_000))
    result = run_install(installed.root)
    assert config.read_text() == operator_config
    assert config.stat().st_mtime_ns == 1_000_000_000
    assert f"keeping existing {config}" in result.stdout


def test_uninstall_removes_what_it_installed_and_keeps_config(installed: Installed) -> None:
    config = installed.etc / "config.yaml"
    kept = config.read_bytes()
    secret = installed.etc / "credentials" / "mqtt-password"
    secret.write_text("not-a-real-secret\n")
    result = run_install(installed.root, "--uninstall")
    assert not installed.prefix.exists()
    assert not installed.unit.exists()
    assert not (installed.etc / "config.example.yaml").exists()
    assert config.read_bytes() == kept
    assert secret.read_text() == "not-a-real-secret\n"
    assert "kept" in result.stdout
    assert str(config) in result.stdout
    # The secret's content is never echoed.
    assert "not-a-real-secret" not in result.stdout + result.stderr
    # Uninstalling twice is harmless.
    run_install(installed.root, "--uninstall")
