"""deploy/docker, checked statically: no docker engine is available to build or run images.

The compose file parses and wires the four services on one network with files that exist;
the container config passes the service's own `load_config`; the Prometheus config the
stack mounts passes promtool with the mounted rules; the Dockerfile installs the locked,
hash-checked dependencies before the package, runs as a non-root user, has a HEALTHCHECK on
/healthz, the documented entrypoint, and no secrets anywhere.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest
import yaml

from edge_facedet.config import load_config
from tests.support.paths import REPO

if TYPE_CHECKING:
    from pathlib import Path

DOCKER = REPO / "deploy" / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"


def compose() -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, object]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def test_compose_services_and_network() -> None:
    found = services()
    assert set(found) == {"edge-facedet", "mosquitto", "prometheus", "grafana"}
    for name, service in found.items():
        assert service.get("networks") == ["edge"], name
    assert str(found["mosquitto"]["image"]).startswith("docker.io/eclipse-mosquitto:2")
    # Pulled images are fully qualified: Podman resolves a short name like
    # `eclipse-mosquitto:2` only through an alias or unqualified-search registries, and
    # Debian's registries.conf has neither for these images.
    for name, service in found.items():
        if "build" not in service:
            assert re.match(r"[a-z0-9.-]+\.[a-z]+/", str(service["image"])), (name, service)
    build = found["edge-facedet"]["build"]
    assert isinstance(build, dict)
    assert (DOCKER / str(build["context"]) / str(build["dockerfile"])).resolve() == DOCKERFILE
    assert (DOCKER / str(build["context"]) / "pyproject.toml").is_file()
    # Metrics stay on the compose network: edge-facedet publishes no port.
    assert "ports" not in found["edge-facedet"]
    # Whatever is published is published on loopback only.
    for name, service in found.items():
        for mapping in service.get("ports", []):  # type: ignore[attr-defined]
            assert str(mapping).startswith("127.0.0.1:"), (name, mapping)


def bind_mounts() -> list[tuple[str, Path, str]]:
    mounts = []
    for name, service in services().items():
        for volume in service.get("volumes", []):  # type: ignore[attr-defined]
            source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/")):
                mounts.append((name, (DOCKER / source).resolve(), target))
    return mounts


def test_bind_mounts_point_into_the_repository() -> None:
    mounts = bind_mounts()
    assert len(mounts) >= 6
    for name, source, target in mounts:
        assert source.exists(), f"{name}: {source} (for {target}) does not exist"
        assert source.is_relative_to(REPO), f"{name}: {source} is outside the repository"
    targets = {target: source for _, source, target in mounts}
    assert targets["/etc/prometheus/alerts.yml"] == REPO / "deploy/prometheus/alerts.yml"
    assert targets["/etc/grafana/provisioning"] == REPO / "deploy/grafana/provisioning"
    assert targets["/mosquitto/config/mosquitto.conf"] == DOCKER / "mosquitto.conf"


def test_container_config_is_valid_and_matches_the_stack() -> None:
    config = load_config(DOCKER / "config.yaml", environ={})
    assert config.mqtt.host == "mosquitto"
    assert config.metrics.host == "0.0.0.0"
    assert config.metrics.port == 9108
    assert config.mqtt.password is None
    scrape = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"edge-facedet:{config.metrics.port}"]
    assert str(config.model.dir) == "/opt/edge-facedet/models"


def test_stack_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    # As mounted in the container: the config with alerts.yml beside it.
    shutil.copy(DOCKER / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(REPO / "deploy/prometheus/alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_healthcheck() -> None:
    steps = instructions()
    keywords = [keyword for keyword, _ in steps]
    froms = [args for keyword, args in steps if keyword == "FROM"]
    args = dict(
        a.split("=", 1)
        for keyword, a in steps
        if keyword == "ARG" and "=" in a and not a[0].isspace()
    )
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)
    # USER of the final stage, after its last FROM, is what the container runs as.
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    users = [a for k, a in final if k == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert "EXPOSE" in keywords
    assert ("EXPOSE", "9108") in steps
    (healthcheck,) = [a for k, a in steps if k == "HEALTHCHECK"]
    assert "EDGE_FACEDET_HEALTHZ_URL" in healthcheck
    envs = " ".join(a for k, a in final if k == "ENV")
    assert "EDGE_FACEDET_HEALTHZ_URL=http://127.0.0.1:9108/healthz" in envs
    (entrypoint,) = [a for k, a in steps if k == "ENTRYPOINT"]
    assert entrypoint == '["edge-facedet", "run", "--config", "/etc/edge-facedet/config.yaml"]'
    # The venv and the model are built in, and the model fetch honours the mirror argument.
    assert any(k == "RUN" and "pip install" in a for k, a in steps)
    assert any(k == "RUN" and "model fetch" in a and "MODEL_MIRROR" in a for k, a in steps)
    assert ("ARG", 'MODEL_MIRROR=""') in steps
    dockerignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in dockerignore
    assert ".git" in dockerignore


def test_dockerfile_installs_the_locked_versions_then_the_package_alone() -> None:
    steps = instructions()
    runs = [(i, a) for i, (k, a) in enumerate(steps) if k == "RUN" and "pip install" in a]
    lock_runs = [i for i, a in runs if "--require-hashes -r /src/requirements.lock" in a]
    package_runs = [i for i, a in runs if "--no-deps /src" in a]
    assert len(lock_runs) == 1, runs
    assert len(package_runs) == 1, runs
    # The lock layer comes first, so a source change does not reinstall the dependencies.
    assert lock_runs[0] < package_runs[0]
    assert ("COPY", "deploy/requirements.lock /src/") in steps[: lock_runs[0]]
    assert not any(k == "COPY" and "edge_facedet" in a for k, a in steps[: lock_runs[0]])
    # Every pip install in the image is either the hash-checked lock or --no-deps.
    assert {i for i, _ in runs} == {*lock_runs, *package_runs}
    dockerignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert not any(entry.startswith("requirements") for entry in dockerignore)
    assert (REPO / "deploy" / "requirements.lock").is_file()


def _unit_value(key: str) -> str:
    (value,) = [
        line.partition("=")[2]
        for line in (REPO / "systemd" / "edge-facedet.service").read_text().splitlines()
        if line.startswith(f"{key}=")
    ]
    return value


def test_compose_bounds_descriptors_pids_and_memory_like_the_unit() -> None:
    # Issue 20, defect 1: the container's equivalents of LimitNOFILE, TasksMax, MemoryMax.
    service = services()["edge-facedet"]
    nofile = int(_unit_value("LimitNOFILE"))
    assert service["ulimits"] == {"nofile": {"soft": nofile, "hard": nofile}}
    assert service["pids_limit"] == int(_unit_value("TasksMax"))
    assert str(service["mem_limit"]).upper() == _unit_value("MemoryMax")
    docs = (REPO / "docs" / "containers.md").read_text()
    assert f"--ulimit nofile={nofile}:{nofile}" in docs
    assert f"--pids-limit {service['pids_limit']}" in docs
    assert f"--memory {service['mem_limit']}" in docs


def test_image_home_is_the_writable_cache_volume() -> None:
    # The image's user has no home directory (/nonexistent), a runtime's arbitrary uid none
    # at all: HOME is the cache volume, as the unit's is its cache directory.
    steps = instructions()
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    envs = " ".join(a for k, a in final if k == "ENV").split()
    assert "HOME=/var/cache/edge-facedet" in envs
    assert "CACHE_DIRECTORY=/var/cache/edge-facedet" in envs
    assert ("VOLUME", '["/var/cache/edge-facedet"]') in final


def test_dockerfile_documents_gpu_and_npu_devices() -> None:
    text = DOCKERFILE.read_text()
    assert "--device /dev/dri" in text
    assert "render" in text
    assert "/dev/accel" in text


_SECRET_ASSIGNMENT = re.compile(
    r"(?i)(password|passwd|secret|token|api[_-]?key)\s*[:=]\s*['\"]?(?!\s*$)[^\s'\"#{]+"
)


def test_no_secrets_in_the_container_files() -> None:
    files = [*DOCKER.iterdir(), *(REPO / "deploy" / "grafana").rglob("*.yaml")]
    checked = 0
    for path in files:
        if not path.is_file():
            continue
        checked += 1
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.lstrip().startswith("#"):
                continue
            assert not _SECRET_ASSIGNMENT.search(line), f"{path.name}:{number}: {line}"
    assert checked >= 7
    environment = [s.get("environment") for s in services().values()]
    assert all(not env for env in environment), "no credentials in compose environment"


def test_secret_pattern_would_catch_a_leak() -> None:
    assert _SECRET_ASSIGNMENT.search("GF_SECURITY_ADMIN_PASSWORD: hunter2")
    assert _SECRET_ASSIGNMENT.search("ENV API_KEY=abc123")
    assert not _SECRET_ASSIGNMENT.search("password: {file: /run/secrets/x}")


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command_passes_on_200_and_fails_on_503(status: int, healthy: bool) -> None:
    """Runs the image's HEALTHCHECK command against a local /healthz answering `status`."""
    (healthcheck,) = [a for k, a in instructions() if k == "HEALTHCHECK"]
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert argv[0] == "python"

    class Healthz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
        result = subprocess.run(
            [sys.executable, *argv[1:]],
            env={**os.environ, "EDGE_FACEDET_HEALTHZ_URL": url},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) is healthy, result.stderr


def test_compose_runs_the_service_read_only_without_capabilities() -> None:
    # docs/containers.md promises these; a compose file that drops one must fail here.
    service = services()["edge-facedet"]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service
    assert "no-new-privileges:true" in service["security_opt"]  # type: ignore[operator]
    assert "privileged" not in service or service["privileged"] is False
    # The read-only root needs its one writable scratch place, and no more.
    assert service["tmpfs"] == ["/tmp"]
