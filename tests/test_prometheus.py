"""deploy/prometheus: promtool checks, alert unit tests, and a real Prometheus scraping the service.

The end-to-end test starts the real service (two looping file cameras, the real broker) and a
real `prometheus` server on loopback that scrapes it every second with the shipped alert rules
loaded, then asks Prometheus' HTTP API whether the target is up, the rules evaluate cleanly
and each camera's inference rate is above zero.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.support.net import free_port
from tests.support.paths import FACE_VIDEO, HIKERS_VIDEO, REPO
from tests.support.service import ServiceProcess, service_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.support.broker import BrokerAddress

PROM_DIR = REPO / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
UNIT_TESTS = REPO / "tests" / "data" / "prometheus" / "alerts_test.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
EXPECTED_ALERTS = {
    "EdgeFacedetTargetDown",
    "EdgeFacedetCameraDown",
    "EdgeFacedetNoFramesInferred",
    "EdgeFacedetMqttDisconnected",
    "EdgeFacedetHighLatency",
    "EdgeFacedetFramesDropped",
    "EdgeFacedetCameraBehind",
    "EdgeFacedetMqttMessagesDropped",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_config() -> None:
    result = promtool("check", "config", str(PROM_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_job_matches_the_target_down_rule() -> None:
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "edge-facedet"
    assert job["scrape_interval"] == "15s"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9108"]
    assert config["rule_files"] == ["alerts.yml"]
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    by_name = {rule["alert"]: rule for rule in rules}
    assert set(by_name) == EXPECTED_ALERTS
    assert f'job="{job["job_name"]}"' in by_name["EdgeFacedetTargetDown"]["expr"]
    for rule in rules:
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
        if "camera" in rule["expr"] or "edge_facedet_camera_up" in rule["expr"]:
            assert "$labels.camera" in rule["annotations"]["summary"], rule["alert"]


def test_alert_unit_tests_cover_every_alert_firing_and_quiet() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for group in tests
        for case in group["alert_rule_test"]
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for group in tests
        for case in group["alert_rule_test"]
        if not case.get("exp_alerts")
    }
    assert fired == EXPECTED_ALERTS
    assert quiet == EXPECTED_ALERTS


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# -- end to end ---------------------------------------------------------------------------------


class PrometheusServer:
    """A real Prometheus on 127.0.0.1:<free port> with its own config and tmp storage."""

    def __init__(self, *, directory: Path, config: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config_file = directory / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_file = directory / "prometheus.log"
        self._storage = directory / "data"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_file.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self._storage}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}{query}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def wait_for(self, what: str, check: Any, timeout: float) -> Any:
        """Poll `check()` until it returns something truthy; fail with the last value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise AssertionError(f"prometheus exited {self._process.returncode}:\n{self.log()}")
            try:
                last = check()
            except OSError as exc:  # not listening yet
                last = exc
            else:
                if last:
                    return last
            time.sleep(0.5)
        raise AssertionError(f"{what} not reached within {timeout} s; last: {last}\n{self.log()}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)


@pytest.fixture
def service_and_prometheus(
    tmp_path: Path,
    model_root: Path,
    mqtt_broker: BrokerAddress,
) -> Iterator[tuple[ServiceProcess, PrometheusServer]]:
    config = service_config(
        node_id="prom-e2e",
        model_root=model_root,
        model_cache=tmp_path / "ov-cache",
        mqtt_port=mqtt_broker.port,
        cameras=[
            {"id": "faces", "url": str(FACE_VIDEO), "loop": True},
            {"id": "hikers", "url": str(HIKERS_VIDEO), "loop": True},
        ],
    )
    service = ServiceProcess(directory=tmp_path / "service", config=config)
    prometheus = PrometheusServer(
        directory=tmp_path / "prometheus",
        config={
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            # The shipped rules, so a rule that errors at evaluation time shows up here.
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "edge-facedet",
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": [f"127.0.0.1:{service.metrics_port}"]}],
                }
            ],
        },
    )
    try:
        service.start()
        prometheus.start()
        yield service, prometheus
    finally:
        prometheus.stop()
        service.close()


@pytest.mark.slow
def test_real_prometheus_scrapes_the_running_service(
    service_and_prometheus: tuple[ServiceProcess, PrometheusServer],
) -> None:
    service, prometheus = service_and_prometheus
    service.wait_ready()

    def target_up() -> list[dict[str, Any]]:
        active = prometheus.api("targets", state="active")["activeTargets"]
        return [t for t in active if t["health"] == "up"]

    (target,) = prometheus.wait_for("target up", target_up, timeout=30)
    assert target["labels"]["job"] == "edge-facedet"
    assert target["scrapeUrl"] == f"http://127.0.0.1:{service.metrics_port}/metrics"

    def inferring_cameras() -> dict[str, float]:
        result = prometheus.api("query", query="rate(edge_facedet_frames_inferred_total[10s])")[
            "result"
        ]
        rates = {sample["metric"]["camera"]: float(sample["value"][1]) for sample in result}
        return rates if set(rates) == {"faces", "hikers"} and min(rates.values()) > 0 else {}

    rates = prometheus.wait_for("inference rate > 0 for both cameras", inferring_cameras, 60)
    # detect_fps is 5 per camera; a rate far above it would mean double counting.
    assert all(0 < rate <= 10 for rate in rates.values()), rates

    def rules_evaluated() -> list[dict[str, Any]]:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return (
            rules
            if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules)
            else []
        )

    rules = prometheus.wait_for("rules evaluated", rules_evaluated, 30)
    assert {rule["name"] for rule in rules} == EXPECTED_ALERTS
    assert all(rule["health"] == "ok" for rule in rules), [
        (rule["name"], rule.get("lastError")) for rule in rules
    ]
    # Scraped from the service, not just defined: the broker connection is reported up.
    (connected,) = prometheus.api("query", query="edge_facedet_mqtt_connected")["result"]
    assert connected["value"][1] == "1"
