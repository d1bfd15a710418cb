"""The metrics page a fresh service shows: names, HELP texts, labels and buckets stay as shipped.

Dashboards, alert rules and users' queries match on these strings, so the rendered page of a
fresh `Metrics()` with one camera registered is compared with a stored copy, byte for byte.
Only the `_created` samples (creation times) are masked. When a metric is changed on purpose,
regenerate the copy with `python tests/test_metrics_exposition.py` and review the diff.
"""

from __future__ import annotations

import re
import sys
import typing
from pathlib import Path

from prometheus_client import generate_latest

from edge_facedet.outputs import metricspecs
from edge_facedet.outputs.metrics import HttpMetrics, MainStreamMetrics, Metrics, TrackMetrics

EXPECTED = Path(__file__).parent / "data" / "prometheus" / "metrics_one_camera.prom"
_CREATED = re.compile(r"^(\w+_created(?:\{[^}\n]*\})?) \S+$", re.MULTILINE)


def rendered() -> str:
    metrics = Metrics()
    metrics.register_camera("cam1")
    return _CREATED.sub(r"\1 CREATED", generate_latest(metrics.registry).decode())


def test_a_fresh_metrics_page_is_the_shipped_one() -> None:
    assert rendered() == EXPECTED.read_text()


def test_every_spec_builds_the_attribute_type_its_owner_declares() -> None:
    # The tables are applied with setattr, which mypy cannot follow: the declared types of
    # the attributes callers use must match what the tables build.
    for owner, table in (
        (Metrics, metricspecs.SERVICE_METRICS),
        (TrackMetrics, metricspecs.TRACK_METRICS),
        (MainStreamMetrics, metricspecs.MAIN_STREAM_METRICS),
        (HttpMetrics, metricspecs.HTTP_METRICS),
    ):
        hints = typing.get_type_hints(owner)
        declared = {name for name, kind in hints.items() if kind in metricspecs.KINDS}
        assert declared == set(table), owner
        for attribute, spec in table.items():
            assert hints[attribute] is spec.kind, (owner, attribute)


if __name__ == "__main__":
    EXPECTED.write_text(rendered())
    sys.stdout.write(f"wrote {EXPECTED}\n")
