"""deploy/kubernetes: every overlay renders, validates against the Kubernetes API schema, and
keeps the properties the service relies on; the fleet's alert rule, unit-tested with promtool.

Rendering is the real `kubectl kustomize` (kustomize v5). Validation is `kubernetes-validate`
(strict: unknown fields are errors) against the newest Kubernetes version it ships; kinds it
has no schema for (the Prometheus Operator's PodMonitor) are skipped by name, with the
reason printed. The service's own config loader checks every ConfigMap's config.yaml.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import kubernetes_validate  # type: ignore[import-untyped]  # no stubs, no py.typed
import pytest
import yaml

from edge_facedet.config import ServiceConfig
from tests.support.paths import REPO

if TYPE_CHECKING:
    from pathlib import Path

KUBE = REPO / "deploy" / "kubernetes"
OVERLAYS = ("base", "overlays/central", "overlays/central-gpu", "overlays/edge", "monitoring")
KUBECTL = shutil.which("kubectl")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SCHEMA_VERSION = kubernetes_validate.latest_version()
# Custom resources: kubernetes-validate holds the core API's schemas only.
NO_SCHEMA = {("monitoring.coreos.com/v1", "PodMonitor"): "a Prometheus Operator CRD"}
WORKLOAD_KINDS = ("StatefulSet", "DaemonSet")
METRICS_PORT = 9108

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with kustomize) not installed")


@dataclass(frozen=True)
class Rendered:
    """One overlay's `kubectl kustomize` output."""

    name: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        (found,) = self.of_kind(kind)
        return found

    def workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in WORKLOAD_KINDS]


def render(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [o for o in yaml.safe_load_all(result.stdout) if o]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    return {name: Rendered(name, render(KUBE / name)) for name in OVERLAYS}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    (only,) = containers
    return only


def env_value(workload: dict[str, Any], name: str) -> str | None:
    return next(
        (e.get("value") for e in container(workload).get("env", []) if e["name"] == name), None
    )


def config_text(bundle: Rendered, workload: dict[str, Any]) -> dict[str, str]:
    """The config files the workload mounts: ConfigMap key -> text."""
    volumes = workload["spec"]["template"]["spec"]["volumes"]
    names = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    return {
        key: text
        for cm in bundle.of_kind("ConfigMap")
        if cm["metadata"]["name"] in names
        for key, text in cm["data"].items()
    }


def test_every_overlay_renders_the_objects_it_promises(rendered: dict[str, Rendered]) -> None:
    kinds = {name: sorted(o["kind"] for o in r.objects) for name, r in rendered.items()}
    sharded = sorted(
        ["ConfigMap", "Secret", "StatefulSet", "Service", "PodDisruptionBudget", "NetworkPolicy"]
    )
    assert kinds["base"] == sharded
    assert kinds["overlays/central"] == sharded
    assert kinds["overlays/central-gpu"] == sharded
    assert kinds["overlays/edge"] == sorted(["ConfigMap", "Secret", "DaemonSet", "NetworkPolicy"])
    assert kinds["monitoring"] == ["PodMonitor"]
    for name, bundle in rendered.items():
        print(f"{name}: {len(bundle.objects)} objects")


def test_rendered_objects_validate_against_the_kubernetes_api_schema(
    rendered: dict[str, Rendered],
) -> None:
    checked = 0
    for bundle in rendered.values():
        for obj in bundle.objects:
            reason = NO_SCHEMA.get((obj["apiVersion"], obj["kind"]))
            if reason is not None:
                print(f"skipped {bundle.name} {obj['kind']}: no schema ({reason})")
                continue
            kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
            checked += 1
    print(f"{checked} objects valid against Kubernetes {SCHEMA_VERSION}")
    assert checked >= 20


def test_a_broken_object_fails_validation() -> None:
    """The validator is not a no-op: a typo'd field of a rendered StatefulSet is an error."""
    statefulset = next(o for o in render(KUBE / "base") if o["kind"] == "StatefulSet")
    statefulset["spec"]["podManagmentPolicy"] = "Parallel"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["base", "overlays/central", "overlays/central-gpu"])
def test_shard_count_equals_replicas(rendered: dict[str, Rendered], overlay: str) -> None:
    statefulset = rendered[overlay].one("StatefulSet")
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert env_value(statefulset, "EDGE_FACEDET_SHARD") == f"auto/{statefulset['spec']['replicas']}"


def test_central_runs_four_shards(rendered: dict[str, Rendered]) -> None:
    assert rendered["overlays/central"].one("StatefulSet")["spec"]["replicas"] == 4


def test_edge_pods_are_not_sharded_and_read_their_nodes_config(
    rendered: dict[str, Rendered],
) -> None:
    daemonset = rendered["overlays/edge"].one("DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    assert env_value(daemonset, "EDGE_FACEDET_SHARD") is None
    assert spec["nodeSelector"] == {"edge-facedet/cameras": "true"}
    command = container(daemonset)["command"]
    assert command[-1] == "/etc/edge-facedet/nodes/$(NODE_NAME).yaml"
    (node_env,) = [e for e in container(daemonset)["env"] if e["name"] == "NODE_NAME"]
    assert node_env["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    files = config_text(rendered["overlays/edge"], daemonset)
    assert sorted(files) == ["gate-1.yaml", "gate-2.yaml"]
    for key, text in files.items():
        assert yaml.safe_load(text)["node_id"] == key.removesuffix(".yaml")


def workloads(rendered: dict[str, Rendered]) -> list[tuple[str, dict[str, Any]]]:
    return [(b.name, w) for b in rendered.values() for w in b.workloads()]


def test_pods_are_as_strict_as_the_systemd_unit(rendered: dict[str, Rendered]) -> None:
    found = workloads(rendered)
    assert len(found) == 4
    for name, workload in found:
        spec = workload["spec"]["template"]["spec"]
        where = f"{name} {workload['kind']}"
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] == 10001, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        context = container(workload)["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["privileged"] is False, where
        assert context["capabilities"] == {"drop": ["ALL"]}, where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where


def test_probes_and_resources(rendered: dict[str, Rendered]) -> None:
    for name, workload in workloads(rendered):
        main = container(workload)
        where = f"{name} {workload['kind']}"
        (port,) = main["ports"]
        assert port == {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}
        probes = {
            kind: main[kind]["httpGet"]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert all(probe["port"] == "metrics" for probe in probes.values()), where
        assert probes["readinessProbe"]["path"] == "/healthz", where
        assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/livez"
        resources = main["resources"]
        assert resources["requests"] == resources["limits"], f"{where}: Guaranteed QoS"
        assert {"cpu", "memory"} <= set(resources["limits"]), where


def test_edge_pod_matches_the_statefulsets_hardening(rendered: dict[str, Rendered]) -> None:
    """The DaemonSet is written out in full: it must not drift from the base's pod spec."""
    statefulset = rendered["base"].one("StatefulSet")
    daemonset = rendered["overlays/edge"].one("DaemonSet")
    for key in ("securityContext", "automountServiceAccountToken", "terminationGracePeriodSeconds"):
        assert (
            daemonset["spec"]["template"]["spec"][key]
            == statefulset["spec"]["template"]["spec"][key]
        )
    for key in (
        "securityContext",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "ports",
    ):
        assert container(daemonset)[key] == container(statefulset)[key], key


def test_gpu_overlay_requests_one_intel_gpu(rendered: dict[str, Rendered]) -> None:
    resources = container(rendered["overlays/central-gpu"].one("StatefulSet"))["resources"]
    assert resources["limits"]["gpu.intel.com/i915"] == "1"
    assert resources["requests"]["gpu.intel.com/i915"] == "1"
    assert (
        "gpu.intel.com/i915"
        not in container(rendered["overlays/central"].one("StatefulSet"))["resources"]["limits"]
    )


def mounts(workload: dict[str, Any]) -> dict[str, str]:
    """Volume name -> mount path."""
    return {m["name"]: m["mountPath"] for m in container(workload)["volumeMounts"]}


def test_configs_load_and_match_the_pod(rendered: dict[str, Rendered]) -> None:
    """Each mounted config is valid to the service, serves metrics on the probed port from
    every interface, keeps the model cache on the emptyDir and reads secrets that the
    Secret holds, where the Secret is mounted."""
    for name, workload in workloads(rendered):
        bundle = rendered[name]
        paths = mounts(workload)
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes["cache"] and "emptyDir" in volumes["tmp"]
        assert paths["tmp"] == "/tmp"
        secret_keys = set(bundle.one("Secret")["data"])
        secret_dir = paths["credentials"]
        for key, text in config_text(bundle, workload).items():
            where = f"{name} {key}"
            config = ServiceConfig.model_validate(yaml.safe_load(text), context={"base_dir": KUBE})
            assert config.metrics.host == "0.0.0.0", where
            assert config.metrics.port == METRICS_PORT, where
            assert config.model.cache_dir is not None, where
            assert config.model.cache_dir.is_relative_to(paths["cache"]), where
            files = [s.file for s in _secret_sources(config) if s.file is not None]
            files += [f for f in (config.mqtt.tls.ca_file,) if f is not None]
            assert files, where
            for path in files:
                assert str(path.parent) == secret_dir, f"{where}: {path}"
                assert path.name in secret_keys, f"{where}: {path.name} not in the Secret"


def _secret_sources(config: ServiceConfig) -> list[Any]:
    sources = [config.mqtt.password]
    sources += [camera.password for camera in config.cameras]
    return [s for s in sources if s is not None]


def test_network_policy_admits_metrics_from_monitoring_only(rendered: dict[str, Rendered]) -> None:
    for name in ("overlays/central", "overlays/edge"):
        policy = rendered[name].one("NetworkPolicy")["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        (ingress,) = policy["ingress"]
        assert ingress["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
        assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        dns = policy["egress"][0]
        assert {p["port"] for p in dns["ports"]} == {53}
        assert len(policy["egress"]) == 3, name


def test_pod_monitor_scrapes_the_metrics_port_as_job_edge_facedet(
    rendered: dict[str, Rendered],
) -> None:
    monitor = rendered["monitoring"].one("PodMonitor")["spec"]
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    # alerts.yml matches job="edge-facedet": the job is the pods' name label.
    assert monitor["jobLabel"] == "app.kubernetes.io/name"
    pod_labels = rendered["overlays/central"].one("StatefulSet")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert pod_labels["app.kubernetes.io/name"] == "edge-facedet"
    assert monitor["selector"]["matchLabels"].items() <= pod_labels.items()


# -- Prometheus -----------------------------------------------------------------------------

SD_CONFIG = KUBE / "monitoring" / "prometheus-kubernetes-sd.yml"
SHARD_RULES = KUBE / "monitoring" / "alerts-shards.yml"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def test_kubernetes_sd_scrape_config(tmp_path: Path) -> None:
    config = yaml.safe_load(SD_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "edge-facedet"
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    result = promtool("check", "config", str(SD_CONFIG))
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian's Prometheus is built without Kubernetes discovery: check the rest of the
        # file (relabelling, rule files) with the discovery replaced by a static target.
        print("promtool lacks kubernetes_sd_configs (Debian build): rest checked statically")
        del job["kubernetes_sd_configs"]
        job["static_configs"] = [{"targets": ["127.0.0.1:9108"]}]
        copy = SD_CONFIG.parent / f".{tmp_path.name}-sd.yml"
        copy.write_text(yaml.safe_dump(config))
        try:
            result = promtool("check", "config", str(copy))
        finally:
            copy.unlink()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_promtool_checks_the_shard_rule() -> None:
    result = promtool("check", "rules", str(SHARD_RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def shard_series(*, index: int, count: int, values: str) -> dict[str, str]:
    labels = (
        f'job="edge-facedet",namespace="edge-facedet",pod="edge-facedet-{index}",'
        f'index="{index}",count="{count}"'
    )
    return {"series": f"edge_facedet_shard_info{{{labels}}}", "values": values}


def shard_alert(*, index: int, count: int) -> dict[str, Any]:
    """The expected alert: labels, and the annotations as Prometheus renders the templates."""
    labels = {
        "severity": "critical",
        "job": "edge-facedet",
        "namespace": "edge-facedet",
        "pod": f"edge-facedet-{index}",
        "index": str(index),
        "count": str(count),
    }
    (group,) = yaml.safe_load(SHARD_RULES.read_text())["groups"]
    (rule,) = group["rules"]

    def fill(template: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), template)

    annotations = {key: fill(text) for key, text in rule["annotations"].items()}
    return {"exp_labels": labels, "exp_annotations": annotations}


def case(series: list[dict[str, str]], *checks: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": "EdgeFacedetShardDown", "exp_alerts": alerts}
            for at, alerts in checks
        ],
    }


def test_shard_down_alert_fires_for_the_missing_shard_only(tmp_path: Path) -> None:
    """promtool unit tests: 4 healthy shards are quiet; shard 2 gone fires for shard 2 alone;
    a scale-down from 4 to 3 (every shard's `count` changes, shard 3 goes) is quiet; every
    shard gone fires for each."""
    gone = "1x5 _x25"  # reported for 5 minutes, then never again
    healthy = [shard_series(index=i, count=4, values="1x30") for i in range(4)]
    one_down = [shard_series(index=i, count=4, values=gone if i == 2 else "1x30") for i in range(4)]
    scaled = [shard_series(index=i, count=4, values=gone) for i in range(4)] + [
        shard_series(index=i, count=3, values="_x5 1x25") for i in range(3)
    ]
    all_down = [shard_series(index=i, count=2, values=gone) for i in range(2)]
    tests = {
        "rule_files": [str(SHARD_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            case(healthy, ("20m", [])),
            # Within the 5-minute lookback the last sample still counts: quiet at 6m.
            case(one_down, ("6m", []), ("15m", [shard_alert(index=2, count=4)])),
            case(scaled, ("15m", [])),
            case(
                all_down,
                ("15m", [shard_alert(index=0, count=2), shard_alert(index=1, count=2)]),
            ),
        ],
    }
    path = tmp_path / "shard_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
