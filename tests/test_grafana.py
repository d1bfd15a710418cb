"""deploy/grafana: the dashboard only queries metrics the service really exports.

The real names come from the service's own `Metrics()` rendered by prometheus_client after
every series was touched (what a scrape of a running service returns, without starting one).
Metric names are parsed out of each PromQL expression; functions, keywords, label names,
grouping clauses, strings and Grafana variables are ignored.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge_facedet.outputs.metrics import Metrics
from tests.support.paths import REPO

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "edge-facedet.json"

# PromQL aggregation operators, functions and keywords that can appear as bare identifiers.
_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "bool", "offset", "inf", "nan",
    }
)  # fmt: skip
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = _GROUPING.sub(" ", text)  # label names in by/on/... clauses
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        following = text[match.end() :].lstrip()
        if following.startswith("("):  # a function or aggregation call
            continue
        if name.lower() in _KEYWORDS or re.fullmatch(r"[0-9eE]+", name):
            continue
        names.add(name)
    return names


def exported_names() -> set[str]:
    metrics = Metrics()
    metrics.register_camera("cam")
    metrics.mqtt_published.inc()
    metrics.mqtt_dropped.inc()
    metrics.inference_seconds.observe(0.01)
    metrics.batch_size.observe(1)
    metrics.pipeline_latency_seconds.labels(camera="cam").observe(0.05)
    metrics.inflight_requests.set(1)
    metrics.mqtt_connected.set(1)
    metrics.build.info({"version": "0"})
    metrics.device.info({"requested": "CPU", "selected": "CPU", "model": "m", "precision": "p"})
    text = generate_latest(metrics.registry).decode()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_exprs(data: dict[str, Any]) -> list[tuple[str, str]]:
    exprs = [(p["title"], t["expr"]) for p in data["panels"] for t in p.get("targets", [])]
    for variable in data["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            expr = query["query"] if isinstance(query, dict) else query
            # label_values(<selector>, <label>): only the selector is PromQL.
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr)
            assert selector is not None, expr
            exprs.append((f"variable {variable['name']}", selector.group(1)))
    return exprs


def test_the_expression_parser_finds_metrics_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, camera) (rate(a_bucket{camera=~"$camera", '
        'instance="x"}[$__rate_interval]))) / on (instance) group_left (camera) b_total > 0.5'
    )
    assert metric_names(expr) == {"a_bucket", "b_total"}
    assert metric_names("sum(up) without (job) or vector(1)") == {"up"}


def test_dashboard_shape() -> None:
    data = dashboard()
    assert 36 <= data["schemaVersion"] <= 41
    assert data["uid"] == "edge-facedet"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in data["panels"]]
    assert len(ids) == len(set(ids))
    for panel in data["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no target"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert target["refId"]


@pytest.mark.parametrize(
    ("title_word", "needle"),
    [
        ("Frames per second", "edge_facedet_frames_captured_total"),
        ("Frames per second", "edge_facedet_frames_inferred_total"),
        ("Dropped", "edge_facedet_frames_dropped_total"),
        ("Pipeline latency", "histogram_quantile(0.5,"),
        ("Pipeline latency", "histogram_quantile(0.95,"),
        ("Pipeline latency", "histogram_quantile(0.99,"),
        ("Inference time", "histogram_quantile(0.99,"),
        ("Batch size", "edge_facedet_batch_size_sum"),
        ("Inference device", "edge_facedet_device_info"),
        ("MQTT connected", "edge_facedet_mqtt_connected"),
        ("Cameras up", "edge_facedet_camera_up"),
    ],
)
def test_required_panels_exist(title_word: str, needle: str) -> None:
    exprs = [expr for title, expr in all_exprs(dashboard()) if title_word in title]
    assert any(needle in expr for expr in exprs), (title_word, needle, exprs)


def test_every_expression_names_only_exported_metrics() -> None:
    exported = exported_names()
    # Sanity: the rendering really holds the families the dashboard is about.
    assert "edge_facedet_pipeline_latency_seconds_bucket" in exported
    assert "edge_facedet_device_info" in exported
    used: set[str] = set()
    for title, expr in all_exprs(dashboard()):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{title}: {sorted(unknown)} not exported (expr {expr!r})"
        used |= names
    assert len(used) >= 12


def test_provisioning_files() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    assert datasources["apiVersion"] == 1
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "edge-facedet.yaml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    # The compose stack mounts the dashboards folder exactly there.
    compose = yaml.safe_load((REPO / "deploy" / "docker" / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{provider['options']['path']}:ro" in mounts
