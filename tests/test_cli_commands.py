"""The offline commands as a user runs them: `model info`, `media fetch`, `bench --help`.

Each runs the installed `edge-facedet` in a subprocess, from a directory that is not the
checkout, and its answer is checked against an independent source: OpenVINO itself for the
model, the mirror's bytes for the media, the suite's own scenario list for `bench`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import cv2
import openvino as ov
import pytest

from benchmarks.run import SCENARIOS
from edge_facedet.tools.assets import DEMO_MEDIA
from tests.support.paths import MEDIA
from tests.support.service import edge_facedet_command

if TYPE_CHECKING:
    from pathlib import Path


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*edge_facedet_command(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=os.environ.copy(),
        check=False,
    )


def sha384(path: Path) -> str:
    return hashlib.sha384(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("precision", ["FP16", "FP16-INT8"])
def test_model_info_reports_the_model_and_the_device_auto_chose(
    model_root: Path, tmp_path: Path, precision: str
) -> None:
    result = cli(
        "model", "info", "--models-dir", model_root, "--precision", precision, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["precision"] == precision
    xml = model_root / "intel" / "face-detection-0204" / precision / "face-detection-0204.xml"
    assert info["model"] == str(xml)
    # What OpenVINO reads from the same file, and what AUTO compiles it for on this host.
    core = ov.Core()
    model = core.read_model(xml)
    expected = [
        [p.get_any_name(), str(p.partial_shape), p.element_type.get_type_name()]
        for p in model.inputs
    ]
    assert [[p["name"], p["shape"], p["type"]] for p in info["inputs"]] == expected
    assert info["inputs"][0]["shape"] == "[1,3,448,448]"
    expected = [
        [p.get_any_name(), str(p.partial_shape), p.element_type.get_type_name()]
        for p in model.outputs
    ]
    assert [[p["name"], p["shape"], p["type"]] for p in info["outputs"]] == expected
    assert set(info["devices"]) == set(core.available_devices)
    chosen = [str(d) for d in core.compile_model(model, "AUTO").get_property("EXECUTION_DEVICES")]
    compiled = info["compiled"]
    assert compiled["requested_device"] == "AUTO"
    assert compiled["execution_devices"] == chosen
    assert set(chosen) <= set(info["devices"])  # a real device, not the word AUTO


def test_media_fetch_from_a_mirror_installs_verified_clips(tmp_path: Path) -> None:
    dest = tmp_path / "media"
    result = cli("media", "fetch", "--mirror", MEDIA, "--dest", dest, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    installed = [dest / asset.relpath for asset in DEMO_MEDIA]
    assert result.stdout.split() == [str(path) for path in installed]
    for asset, path in zip(DEMO_MEDIA, installed, strict=True):
        assert path.read_bytes() == (MEDIA / asset.relpath).read_bytes(), path
        assert sha384(path) == asset.sha384
        capture = cv2.VideoCapture(str(path))  # a clip the demo config can play
        try:
            ok, image = capture.read()
        finally:
            capture.release()
        assert ok and image.shape[:2] == (270, 480), path
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == sorted(
        path.name for path in installed
    )  # no partial downloads left beside them


def test_media_fetch_refuses_a_corrupt_mirror_file_and_installs_nothing_of_it(
    tmp_path: Path,
) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(MEDIA / "sample-videos", mirror / "sample-videos")
    bad = DEMO_MEDIA[1]
    corrupt = mirror / bad.relpath
    corrupt.chmod(0o644)
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte different: only the hash can tell
    corrupt.write_bytes(bytes(data))
    dest = tmp_path / "media"
    result = cli("media", "fetch", "--mirror", mirror, "--dest", dest, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and bad.name in lines[0] and "Traceback" not in result.stderr, lines
    assert not (dest / bad.relpath).exists()
    assert [p.name for p in (dest / "sample-videos").iterdir()] == [DEMO_MEDIA[0].name]


def test_bench_help_lists_every_scenario_and_runs_nothing(tmp_path: Path) -> None:
    result = cli("bench", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: edge-facedet bench")
    for scenario in SCENARIOS:
        assert scenario in result.stdout
    assert list(tmp_path.iterdir()) == []  # no results folder, no files
    wrong = cli("bench", "--scenarios", "nonesuch", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "nonesuch" in wrong.stderr and "Traceback" not in wrong.stderr
    assert list(tmp_path.iterdir()) == []


def test_bench_render_writes_the_report_of_an_earlier_run(tmp_path: Path) -> None:
    # `bench --render` is the command's one path that measures nothing; every scenario is
    # minutes of load-sensitive work and belongs to the bench itself (docs/benchmarks.md),
    # with its pieces tested in test_bench_report and test_rtsp_drain.
    from tests.test_bench_report import sample_results

    run = tmp_path / "bench-20261126T070800Z"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(sample_results()))
    result = cli("bench", "--render", run / "results.json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = (run / "results.md").read_text()
    assert report.startswith("# edge-facedet benchmark 2026-11-26 07:08 UTC")
    assert "| 8 | 123.3 | 122.3 | 0.89 |" in report
    # The chart needs the bench extra (matplotlib), which the test environment may lack: then
    # the report is written all the same and the missing chart is said, not a failure.
    if importlib.util.find_spec("matplotlib") is not None:
        assert cv2.imread(str(run / "chart.png")) is not None
    else:
        assert not (run / "chart.png").exists()
        assert "chart.png not written: matplotlib is missing" in result.stderr
    missing = cli("bench", "--render", tmp_path / "absent.json", cwd=tmp_path)
    assert missing.returncode == 2 and "absent.json" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr
