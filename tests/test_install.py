"""deploy/install.sh, run for real into a temporary --root (a real venv, pip, the model mirror).

One installation is shared by the module (a venv install takes ~20 s); the tests run in file
order against it: fresh layout, the lock's exact versions, a no-op second run, an operator's
config kept, uninstall. A non-default --prefix/--etc proves the unit and starter config follow
the chosen paths. The lock files themselves (pins, hashes, agreement with pyproject.toml) and
the README's operator commands against the shipped unit are checked first, without installing
anything.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name
from packaging.version import Version

from edge_facedet import __version__
from edge_facedet.config.secrets import UNIT_CREDENTIAL_PREFIX, UNIT_CREDENTIALS_DIR
from tests.support.lock import REFRESH, RUNTIME_LOCK, TEST_LOCK, declared, read_lock
from tests.support.paths import MODEL_MIRROR, REPO
from tests.support.service import edge_facedet_command

INSTALL = REPO / "deploy" / "install.sh"
SETUP = REPO / "deploy" / "setup.sh"
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
        ["shellcheck", str(INSTALL), str(SETUP), str(REFRESH)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, TEST_LOCK], ids=lambda path: path.name)
def test_lock_has_sha256_hashes_for_every_requirement(lock: Path) -> None:
    pins = read_lock(lock)
    assert len(pins) >= 15
    for pin in pins:
        assert pin.hashes, f"{lock.name}: {pin.requirement} has no --hash"
        assert all(h.startswith("sha256:") and len(h) == 7 + 64 for h in pin.hashes), pin
    # The header names the command that refreshes it.
    assert "bash deploy/refresh-lock.sh" in "".join(lock.read_text().splitlines(True)[:3])


def test_lock_pins_aiomqtt_2_and_paho_2() -> None:
    """aiomqtt 3 drops paho-mqtt, aiomqtt.exceptions, ProtocolVersion and timeout=."""
    for lock in (RUNTIME_LOCK, TEST_LOCK):
        pins = {pin.name: pin for pin in read_lock(lock)}
        assert Version("2.3") <= Version(pins["aiomqtt"].version) < Version("3"), lock.name
        assert Version("2") <= Version(pins["paho-mqtt"].version) < Version("3"), lock.name
    bounds = {req.name: req.specifier for req in declared()}
    assert not bounds["aiomqtt"].contains("3.0.0a1", prereleases=True)
    assert not bounds["aiomqtt"].contains("3.0.0")
    assert bounds["paho-mqtt"].contains("2.1.0")
    assert not bounds["paho-mqtt"].contains("3.0.0")


@pytest.mark.parametrize(
    ("lock", "extra"), [(RUNTIME_LOCK, None), (TEST_LOCK, "test")], ids=["runtime", "test"]
)
def test_lock_satisfies_pyproject(lock: Path, extra: str | None) -> None:
    """Every declared dependency is locked at a version its bounds allow (refresh if not)."""
    pins = read_lock(lock)
    wanted = declared() + (declared(extra=extra) if extra else [])
    for requirement in wanted:
        versions = [pin.version for pin in pins if pin.name == canonicalize_name(requirement.name)]
        assert versions, f"{requirement.name} is not in {lock.name}: bash deploy/refresh-lock.sh"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock.name} pins {requirement.name}=={version} outside {requirement}"
            )


def test_test_lock_pins_the_runtime_lock_versions() -> None:
    """The service runs in tests with the versions an installed service gets."""
    runtime = {(pin.name, pin.version, pin.marker) for pin in read_lock(RUNTIME_LOCK)}
    test = {(pin.name, pin.version, pin.marker) for pin in read_lock(TEST_LOCK)}
    assert runtime <= test, runtime - test


def test_one_opencv_wheel_and_numpy_2() -> None:
    for lock in (RUNTIME_LOCK, TEST_LOCK):
        pins = read_lock(lock)
        # Two OpenCV wheels overwrite each other's cv2 package.
        assert {p.name for p in pins if p.name.startswith("opencv")} == {"opencv-python-headless"}
        assert all(Version(p.version).major == 2 for p in pins if p.name == "numpy")


@pytest.mark.parametrize(
    ("script", "lock"), [(INSTALL, "requirements.lock"), (SETUP, "requirements-test.lock")]
)
def test_scripts_install_from_the_lock(script: Path, lock: str) -> None:
    text = script.read_text()
    assert "--require-hashes -r" in text
    assert lock in text
    # The project itself comes without dependency resolution, so nothing outside the lock.
    assert "--no-deps" in text
    # A changed lock is what makes the stamp (and so pip) run again.
    stamp_lines = [line for line in text.splitlines() if "sha256sum" in line]
    assert any(lock in line or '"$lock"' in line for line in stamp_lines), stamp_lines


# The operator path without installing: the README's commands against the shipped unit.

UNIT = REPO / "systemd" / "edge-facedet.service"
README = REPO / "README.md"


def _readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n### {title}\n")
    return text[start : text.index("\n#", start + 1)]


def test_credential_lookup_follows_the_units_load_credential() -> None:
    # The folder form check-config maps (`edge-facedet_F` is the file F) is the unit's own.
    (value,) = [
        line.removeprefix("LoadCredential=")
        for line in UNIT.read_text(encoding="utf-8").splitlines()
        if line.startswith("LoadCredential=")
    ]
    unit_id, folder = value.split(":", 1)
    assert f"{unit_id}_" == UNIT_CREDENTIAL_PREFIX
    assert Path(folder) == UNIT_CREDENTIALS_DIR


def test_readme_check_config_step_passes_with_a_credential(tmp_path: Path) -> None:
    # Before: the README's check-config step exited 2 as soon as the config used the
    # `credential:` password its Secrets section recommends ($CREDENTIALS_DIRECTORY exists
    # only inside the unit). Run the README's own lines, with /etc/edge-facedet -> tmp_path.
    install = _readme_section("Install").replace("\\\n", " ")
    (line,) = [line for line in install.splitlines() if " check-config " in line]
    words = shlex.split(line)
    assert words[:2] == ["sudo", "/opt/edge-facedet/venv/bin/edge-facedet"]
    etc = tmp_path / "etc" / "edge-facedet"
    args = [word.replace("/etc/edge-facedet", str(etc)) for word in words[2:]]
    secrets = _readme_section("Secrets")
    (tee,) = [line for line in secrets.splitlines() if line.startswith("printf ")]
    secret_file = Path(tee.split("sudo tee ")[1].split()[0].replace("/etc/edge-facedet", str(etc)))
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text("the-password")
    (mqtt,) = [line for line in secrets.splitlines() if line.startswith("mqtt: {")]
    (etc / "config.yaml").write_text(f"{mqtt}\ncameras: [{{id: a, url: 'rtsp://192.0.2.1/x'}}]\n")
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    result = subprocess.run(
        [*edge_facedet_command(), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "mqtt: 127.0.0.1:1883, TLS no, user edge" in result.stdout
    assert "the-password" not in result.stdout + result.stderr


def test_install_script_check_hints_name_the_credentials_dir() -> None:
    # The starter config's to-do and the closing hint are the commands an operator copies;
    # without --credentials-dir they exit 2 once a `credential:` password is set.
    lines = [line for line in INSTALL.read_text().splitlines() if "check-config" in line]
    commands = [line for line in lines if "edge-facedet check-config" in line or "%s check" in line]
    assert len(commands) == 2, lines
    for line in commands:
        assert "--credentials-dir" in line, line


@pytest.mark.slow
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
    # Documentation= is the README installed beside the venv (no man: link, see test_systemd).
    assert f"Documentation=file:{PREFIX}/README.md" in unit.splitlines()
    assert (installed.prefix / "README.md").read_bytes() == (REPO / "README.md").read_bytes()
    assert "/opt/edge-facedet" not in unit
    assert "/etc/edge-facedet" not in unit
    assert installed.unit.stat().st_mode & 0o777 == 0o644
    # Nothing outside the chosen paths.
    assert sorted(p.name for p in installed.root.iterdir()) == ["etc", "opt"]


@pytest.mark.slow
def test_installed_versions_are_the_locked_ones(installed: Installed) -> None:
    python = str(installed.prefix / "venv/bin/python")
    listing = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "list",
            "--format=json",
            "--exclude",
            "pip",
            "--exclude",
            "setuptools",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    ).stdout
    installed_versions = {
        canonicalize_name(item["name"]): item["version"] for item in json.loads(listing)
    }
    code = "import platform, sys; print(platform.python_version(), sys.platform)"
    version, platform = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    environment = {
        "python_full_version": version,
        "python_version": ".".join(version.split(".")[:2]),
        "sys_platform": platform,
    }
    locked = {pin.name: pin.version for pin in read_lock(RUNTIME_LOCK) if pin.applies(environment)}
    assert installed_versions.pop("edge-facedet") == __version__
    assert installed_versions == locked
    check = subprocess.run(
        [python, "-m", "pip", "check"], capture_output=True, text=True, env=_env(), check=False
    )
    assert check.returncode == 0, check.stdout


@pytest.mark.slow
def test_second_run_changes_nothing(installed: Installed) -> None:
    before = snapshot(installed.root)
    assert len(before) > 100  # the venv is in it
    result = run_install(installed.root)
    after = snapshot(installed.root)
    assert after == before
    assert "up to date" in result.stdout
    assert "keeping existing" in result.stdout


@pytest.mark.slow
def test_existing_config_is_never_overwritten(installed: Installed) -> None:
    config = installed.etc / "config.yaml"
    operator_config = "node_id: my-own\ncameras:\n  - id: gate\n    url: /dev/video0\n"
    config.write_text(operator_config)
    os.utime(config, ns=(1_000_000_000, 1_000_000_000))
    result = run_install(installed.root)
    assert config.read_text() == operator_config
    assert config.stat().st_mtime_ns == 1_000_000_000
    assert f"keeping existing {config}" in result.stdout


@pytest.mark.slow
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
