"""The bench report renderer (benchmarks/report.py) and the docs page it maintains.

Renders small results dicts like the ones benchmarks/run.py saves (no benchmark is run):
the header dates the run and describes its host, a scenario the run did not have renders
nothing, `--docs` rewrites only the generated part of docs/benchmarks.md, and the page's
headings that other files link to exist.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.accuracy import ClipReference, match_count, score
from benchmarks.report import (
    GENERATED_MARKER,
    NOTES_MARKER,
    cpu_isa,
    cpu_model,
    host_line,
    run_date,
    write_docs,
    write_markdown,
)
from benchmarks.run import RUN_METADATA, SCENARIOS, Bench, gating_on_time, tracking_summary
from edge_facedet.frames import Detections

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "benchmarks.md"

XEON_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni
"""


def sample_results() -> dict[str, Any]:
    """The 2026-11-26 run's figures, cut down to ceilings, one throughput row and memory."""
    return {
        "machine": {
            "cpu": "AMD EPYC",
            "isa": "AVX-512 VNNI",
            "cores": 2,
            "ram_gb": 23.5,
            "openvino": "2026.4.1",
            "opencv": "5.0.0",
            "python": "3.11.7",
            "kernel": "6.18",
        },
        "started": "20261126T070852Z",
        "settings": {"quick": False, "long": True, "scenarios": ["ceilings", "memory"]},
        "load": {"ceilings": [1.42, 2.73, 2.49]},
        "ceilings": {
            "inference_fps": {"best": 180.4, "median": 179.8},
            "infer_ms_per_frame": 11.09,
            "decode_ms": {
                "720p": {
                    "grab": {"best": 2.83, "median": 2.86},
                    "bgr": {"best": 0.55},
                    "resize": {"best": 0.40},
                },
            },
            "720p": {"decode_fps": 593.3, "combined_fps": 138.3, "predicted_capacity": 15.5},
            "live_720p": {"streams": 16, "grab_ms": 3.24, "fps": 25.0, "predicted_capacity": 14.4},
        },
        "throughput": {"8": {"best": 123.3, "median": 122.3, "cpu_cores_used": 1.96}},
        "memory": {
            "cameras": 16,
            "seconds": 600,
            "peak_rss_mb": 377.9,
            "rss_start_mb": 371.6,
            "rss_end_mb": 372.2,
            "growth_pct": 0.17,
            "min_camera_fps": 2.92,
            "samples": [],
        },
    }


def test_header_dates_the_run_and_describes_the_host(tmp_path: Path) -> None:
    text = write_markdown(results=sample_results(), out=tmp_path)
    lines = text.splitlines()
    assert lines[0] == "# edge-facedet benchmark 2026-11-26 07:08 UTC"
    assert "Run: started 2026-11-26 07:08 UTC; scenarios ceilings, memory; `--long`." in lines
    assert (
        "Host: AMD EPYC, 2 vCPUs, AVX-512 VNNI, 23.5 GB RAM; benchmark_app 180.4 inferences/s "
        "(11.09 core-ms each); 720p grab 2.83 ms read flat out, 3.24 ms live (16 streams)."
    ) in lines
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == [
        "## Ceilings",
        "## Throughput, 720p, every frame inferred (frames/s)",
        "## Memory",
    ]
    assert "| 8 | 123.3 | 122.3 | 0.89 |" in text
    assert (tmp_path / "results.md").read_text() == text


def test_host_line_without_ceilings_or_isa() -> None:
    results = {"machine": {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2}}
    assert host_line(results) == "Host: Intel(R) Xeon(R) Processor, 2 vCPUs."
    assert run_date({"started": "not a stamp"}) == "not a stamp"


def test_cpu_model_and_isa_from_cpuinfo() -> None:
    assert cpu_model(XEON_CPUINFO) == "Intel(R) Xeon(R) Processor"
    assert cpu_isa(XEON_CPUINFO) == "AVX-512 VNNI, no bf16"
    with_bf16 = XEON_CPUINFO.replace("avx512_vnni", "avx512_vnni avx512_bf16 amx_tile")
    assert cpu_isa(with_bf16) == "AVX-512 VNNI, AVX-512 bf16, AMX"
    assert cpu_model("") == ""
    assert cpu_isa("") == ""


def test_docs_rewrites_only_the_generated_part(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    page = docs / "benchmarks.md"
    preamble = "# Benchmarks\n\nHand-written: hosts change between runs.\n"
    notes = "\n\n# Notes\n\nHand-written history.\n"
    page.write_text(f"{preamble}\n{GENERATED_MARKER}\nstale tables\n{NOTES_MARKER}{notes}")
    out = tmp_path / "results" / "bench-20261126T070852Z"
    out.mkdir(parents=True)
    markdown = write_markdown(results=sample_results(), out=out)
    write_docs(results=sample_results(), markdown=markdown, out=out, repo=tmp_path)
    text = page.read_text()
    assert text.startswith(preamble + "\n" + GENERATED_MARKER)
    assert text.endswith(NOTES_MARKER + notes)
    assert "stale tables" not in text
    generated = text.split(GENERATED_MARKER)[1].split(NOTES_MARKER)[0]
    assert "## Method" in generated
    assert "# Latest full run" in generated
    assert "`results/bench-20261126T070852Z/results.json`" in generated
    assert "Run: started 2026-11-26 07:08 UTC" in generated
    assert "Host: AMD EPYC, 2 vCPUs, AVX-512 VNNI" in generated
    write_docs(results=sample_results(), markdown=markdown, out=out, repo=tmp_path)
    assert page.read_text() == text  # rendering again changes nothing


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors() -> set[str]:
    lines = PAGE.read_text().splitlines()
    return {_slug(line.lstrip("#")) for line in lines if line.startswith("#")}


def test_page_keeps_its_markers_and_no_run_is_dated_by_session() -> None:
    text = PAGE.read_text()
    assert text.index(GENERATED_MARKER) < text.index(NOTES_MARKER)
    assert not re.search(r"\b(first|second|third|fourth|fifth|sixth|this) session", text, re.I)


@pytest.mark.parametrize(
    "anchor",
    [
        # Sections that code comments, config/example.yaml and the other docs point at.
        "where-the-cpu-goes",
        "the-event-loops-cost-per-frame",
        "opencvs-worker-pool-off",
        "decoders-compared-pyav-skip_loop_filter-keyframes_only",
        "niceness-reader_nice",
        "memory",
        "measured-not-adopted",
    ],
)
def test_page_has_the_sections_others_refer_to(anchor: str) -> None:
    assert anchor in _anchors()


def test_links_into_the_page_resolve() -> None:
    headings = _anchors()
    sources = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = [
        f"{source.name}: #{anchor}"
        for source in sources
        for anchor in re.findall(r"benchmarks\.md#([\w\-]+)", source.read_text())
        if anchor not in headings
    ]
    broken += [
        f"benchmarks.md: #{anchor}"
        for anchor in re.findall(r"\]\(#([\w\-]+)\)", PAGE.read_text())
        if anchor not in headings
    ]
    assert not broken, broken


def test_slowclients_scenario_renders_one_row_per_phase(tmp_path: Path) -> None:
    phase = {
        "phase": "1000 slow clients", "seconds": 15.0, "fds_max": 212, "threads_max": 30,
        "rss_max_mib": 301.5, "scrapes": 140, "scrapes_failed": 0, "metrics_p50_ms": 1.2,
        "metrics_p99_ms": 4.8, "metrics_max_ms": 9.0, "inferred_per_s": 10.0,
        "dropped": {"too_many": 812.0},
    }  # fmt: skip
    results = {**sample_results(), "slowclients": {"phases": [phase], "service_nofile": 1024}}
    text = write_markdown(results=results, out=tmp_path)
    assert "## Slow HTTP clients against the metrics endpoint" in text
    assert (
        "| 1000 slow clients | 15.0 | 212 | 30 | 301.5 | 140 (0) | 1.2 / 4.8 / 9.0 | 10.0 "
        "| too_many 812 |"
    ) in text


def _track_run(fps: float, *, published: float = 0.0) -> dict[str, Any]:
    return {
        "total_fps": fps, "cpu_cores_used": 1.9, "fps_per_core": fps / 1.9, "seconds": 12.0,
        "window": {"events_new": 24.0, "events_update": 12.0, "events_end": 36.0,
                   "snapshots_published": published, "snapshots_failed": 0.0,
                   "snapshots_dropped": 0.0},
        "totals": {"events_new": 40.0, "events_update": 20.0, "events_end": 30.0,
                   "snapshots_published": 2 * published},
        "snapshot_files": 17,
    }  # fmt: skip


def test_tracking_memory_and_volume_scenarios_render_their_figures(tmp_path: Path) -> None:
    runs = {
        "off": [_track_run(100.0), _track_run(120.0), _track_run(110.0), _track_run(90.0)],
        "on": [_track_run(97.0, published=60.0), _track_run(108.0, published=60.0),
               _track_run(110.0, published=60.0), _track_run(0.0)],
    }  # fmt: skip
    memory_run = {"peak_rss_mb": 378.0, "rss_end_mb": 370.0, "min_camera_fps": 4.9, "samples": []}
    crop_run = {**memory_run, "peak_rss_mb": 392.5, "track_counters": {"snapshots_published": 80}}
    volume_row = {
        "clip": "hikers.mp4", "clip_seconds": 17.4,
        "on_change": {"faces_per_min": 120.0, "events_per_min": 30.0,
                      "events_by_type_per_min": {"new": 10.0, "update": 8.0, "end": 12.0}},
        "every_frame": {"faces_per_min": 300.0, "events_per_min": 31.0},
    }  # fmt: skip
    results = {
        **sample_results(),
        "tracking": tracking_summary(runs=runs, cameras=8, seconds=12.0),
        "memory_snapshots": {
            "cameras": 16, "seconds": 90.0, "runs": {"off": [memory_run], "crop": [crop_run]},
        },
        "volume": {"seconds": 60.0, "detect_fps": 5.0, "clips": {"hikers": volume_row}},
    }  # fmt: skip
    text = write_markdown(results=results, out=tmp_path)
    # Pair ratios 0.97, 0.9, 1.0: the median and the spread, and the target judged on the median;
    # the fourth pair, whose window heard no faces message, is left out of every figure.
    assert "| tracking off | 110.0 (100.0-120.0) |" in text
    assert "median 0.970 (min-max 0.900-1.000; pairs 0.970, 0.900, 1.000)." in text
    assert "per CPU-second per pair: median 0.970 (min-max 0.900-1.000)." in text
    assert "Target: ratio >= 0.95: detections/s met; per CPU-second met." in text
    assert "Pairs left out: 1 " in text
    assert "| 1 | 2.0 / 1.0 / 3.0 | 5.0 / 0.0 / 0.0 | 90 | 120 | 17 |" in text
    assert "| 4 (left out) | 2.0 / 1.0 / 3.0 | 0.0 / 0.0 / 0.0 | 90 | 0 | 17 |" in text
    assert "| crop | 1 | 392.5 | 370.0 | 4.90 | 80 |" in text
    assert "off 378.0 MB, crop 392.5 MB, difference +14.5 MB." in text
    assert "| hikers.mp4 | 17.4 | 120.0 | 300.0 | 30.0 / 31.0 | 10.0 / 8.0 / 12.0 | 4.0 |" in text


def _faces(*boxes: tuple[float, float, float, float]) -> Detections:
    """Faces of a 100x100 frame at confidence 0.9, boxes normalised."""
    norm = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(
        boxes_px=norm * 100.0, boxes_norm=norm, confidences=np.full(len(norm), 0.9, np.float32)
    )


FACE = (0.2, 0.2, 0.4, 0.4)
ELSEWHERE = (0.6, 0.6, 0.8, 0.8)


def _face_from_frame_7() -> ClipReference:
    """One second at 25 fps; a face from frame 7 on (due frames at 5/s: 0, 5, 10, 15, 20)."""
    return ClipReference(
        clocks=np.arange(25, dtype=np.float64) / 25.0,
        faces=[_faces(FACE) if index >= 7 else _faces() for index in range(25)],
    )


def test_a_reading_that_skips_frames_shows_its_last_faces_and_reports_a_new_face_late() -> None:
    ref = _face_from_frame_7()
    every_due = score(ref=ref, detected={i: ref.faces[i] for i in (0, 5, 10, 15, 20)})
    assert (every_due.reference_faces, every_due.matched, every_due.extra) == (3, 3, 0)
    assert every_due.delays_ms == pytest.approx((120.0,))  # frame 7 -> due frame 10
    # Detected at frames 0 and 15 only (a gate closed at 5 and 10): due frame 10 shows frame
    # 0's faces (none), 15 and 20 show frame 15's; the face is first reported at frame 15.
    skipping = score(ref=ref, detected={0: ref.faces[0], 15: ref.faces[15]})
    assert (skipping.matched, skipping.detected_frames, skipping.never_reported) == (2, 2, 0)
    assert skipping.recall == pytest.approx(2 / 3)
    assert skipping.delays_ms == pytest.approx((320.0,))
    # A face reported where the reference has none is an extra, and no match.
    shifted = score(ref=ref, detected={i: _faces(ELSEWHERE) for i in (0, 5, 10, 15, 20)})
    assert (shifted.matched, shifted.extra, shifted.never_reported) == (0, 5, 1)


def test_faces_match_one_to_one_at_half_overlap() -> None:
    truth = _faces(FACE, ELSEWHERE).boxes_norm
    # IoU of (0.2, 0.2, 0.4, 0.4) with a box shifted by 0.05: 0.15 x 0.2 / (0.08 - 0.03) = 0.6.
    assert match_count(truth, _faces((0.25, 0.2, 0.45, 0.4)).boxes_norm) == 1
    # Shifted by 0.08: 0.12 x 0.2 / (0.08 - 0.024) = 0.43, below 0.5.
    assert match_count(truth, _faces((0.28, 0.2, 0.48, 0.4)).boxes_norm) == 0
    # Two found boxes on one true face match it once.
    assert match_count(truth[:1], _faces(FACE, FACE).boxes_norm) == 1


def _gating_run(*, on_time: bool, cpu: float) -> dict[str, Any]:
    return {
        "on_time": on_time, "total_fps": 60.0, "min_camera_fps": 0.5, "cpu_cores_used": cpu,
        "cpu_ms_per_camera_s": 1000.0 * cpu / 16, "stale_per_s": 0.0,
        "grabbed_per_camera_s": 25.0, "p99_ms": 80.0, "internal_p99_ms": 40.0, "load_1min": 1.5,
        "gated_share": 0.7, "detected_of_sent": 0.97,
    }  # fmt: skip


def test_accuracy_and_gating_scenarios_render_their_figures(tmp_path: Path) -> None:
    reading = {
        "reference_faces": 100, "matched": 99, "recall": 0.99, "extra": 1, "due_frames": 50,
        "detected_frames": 20, "verdicts": {"motion": 15, "gated": 30},
    }  # fmt: skip
    summary = {
        "recall": 0.99, "extra_per_frame": 0.02, "detected_share": 0.4, "tracks": 7,
        "never_reported": 0, "delay_p50_ms": 120.0, "delay_p95_ms": 320.0, "delay_max_ms": 400.0,
    }  # fmt: skip
    results = {
        **sample_results(),
        "accuracy": {
            "detect_fps": 5.0, "threshold": 0.5, "match_iou": 0.5,
            "summary": {"motion gating": summary},
            "clips": [{"clip": "room.mp4", "seconds": 139.3,
                       "readings": {"motion gating": reading}}],
            "false_motion": {"clip": "room.mp4", "seconds": 5.0, "due_frames": 24,
                             "motion_frames": 0, "share": 0.0, "max_changed": 0.0004},
        },
        "gating": {
            "seconds": 40.0,
            "ungated": {"capacity": 24, "steps": [
                {"cameras": 24, **_gating_run(on_time=True, cpu=1.9)},
                {"cameras": 25, **_gating_run(on_time=False, cpu=1.9)}]},
            "gated": {"capacity": 50, "steps": [
                {"cameras": 48, **_gating_run(on_time=True, cpu=1.2)},
                {"cameras": 50, **_gating_run(on_time=True, cpu=1.3)},
                {"cameras": 52, **_gating_run(on_time=False, cpu=1.9)}]},
            "ratio": 2.08,
            "latency": {"cameras": 40, **_gating_run(on_time=True, cpu=1.0)},
            "idle": {"cameras": 16, "runs": {"ungated": [_gating_run(on_time=True, cpu=1.6)],
                                             "gated": [_gating_run(on_time=True, cpu=0.4)]}},
        },
    }  # fmt: skip
    text = write_markdown(results=results, out=tmp_path)
    assert "| motion gating | 0.990 | 0.020 | 0.400 | 7 (0) | 120 / 320 / 400 |" in text
    assert "| room.mp4 | 139.3 | 100 | 0.990 (0.40) |" in text
    # 320 ms is above one detect period (200 ms) plus 100 ms.
    assert "recall >= 0.98 (0.990): met; delay p95 <= 300 ms (320): **not met**." in text
    assert "0 frames (0.0 %; largest changed share 0.04 %). Target < 5 %: met." in text
    # With the same stream read ungated beside it, gating is judged by what it adds.
    substream = {**summary, "recall": 0.9, "delay_p95_ms": 600.0}
    both = {**results["accuracy"], "clips": [], "summary": {
        "640x360 substream": substream,
        "640x360 substream, motion gating": {**substream, "recall": 0.891, "delay_p95_ms": 720.0},
    }}  # fmt: skip
    text = write_markdown(results={**results, "accuracy": both}, out=tmp_path)
    assert (
        "Target, 640x360 substream, motion gating, against 640x360 substream ungated: recall "
        "0.891 of 0.900 = 0.990 >= 0.98: met; delay p95 720 ms (ungated 600, 120 ms added; "
        "<= 100 ms: **not met**)." in text
    )
    row = "| ungated | 25 | no | 60.0 (0.50) | 1.90 | 118.8 | 0.0 | 25.0 | 0.70 | 0.97 | 80 (40) |"
    assert row in text
    assert "| gated | 50 | yes |" in text
    assert "Capacity: ungated 24, gated 50 cameras: **2.08x** (target >= 2x)." in text
    assert "(40 cameras): p99 capture to MQTT receipt 80.0 ms, in-service 40.0 ms" in text
    assert "gated 25.0 ms/s, ungated 100.0 ms/s (0.25 of ungated)." in text


def test_a_gated_camera_is_on_time_at_its_recheck_rate_and_without_stale_frames() -> None:
    # Rechecks every 2 s land on the next due frame, up to 2.2 s apart: 0.44/s is on time.
    gated = {**_gating_run(on_time=True, cpu=1.0), "gated": True, "all_started": True}
    gated["min_camera_fps"] = 0.44
    assert gating_on_time(gated)
    assert not gating_on_time({**gated, "stale_per_s": 1.8})
    assert not gating_on_time({**gated, "grabbed_per_camera_s": 20.0})
    assert not gating_on_time({**gated, "min_camera_fps": 0.3})
    # The frames the gate sent, detected as every due frame is ungated (4.5 of 5): a gate
    # that sends more than the detector takes drops them, however many cameras pass.
    assert gating_on_time({**gated, "detected_of_sent": 0.9})
    assert not gating_on_time({**gated, "detected_of_sent": 0.85})
    assert not gating_on_time({**gated, "detected_of_sent": None})
    # Ungated, the capacity scenario's rule: every camera at least 4.5 detections/s.
    ungated = {**gated, "gated": False, "min_camera_fps": 4.6}
    assert gating_on_time(ungated)
    assert not gating_on_time({**ungated, "min_camera_fps": 4.4})


def test_reuse_keeps_every_earlier_result_but_not_the_earlier_runs_metadata(
    tmp_path: Path,
) -> None:
    """`bench --reuse` renders a whole page from a partial rerun: every scenario's results of
    the earlier run must come along (a fixed list once dropped `slowclients`)."""
    results = {key: {"from": "earlier", "key": key} for key in (*SCENARIOS, "naive_capacity",
               "substream_capacity", "decoder_capacity")}  # fmt: skip
    metadata = {key: f"earlier {key}" for key in RUN_METADATA}
    earlier = tmp_path / "results.json"
    earlier.write_text(json.dumps({**results, **metadata}))
    args = argparse.Namespace(
        quick=True, long=False, out=tmp_path / "out", repeats=None, capacity_seconds=None,
        gating_cameras=None, reuse=earlier,
    )  # fmt: skip
    bench = Bench(args=args)
    for key, value in results.items():
        assert bench.results.get(key) == value, key
    assert bench.results["started"] != "earlier started"
    assert bench.results["reused_from"] == str(earlier)
