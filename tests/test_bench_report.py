"""The bench report renderer (benchmarks/report.py) and the docs page it maintains.

Renders small results dicts like the ones benchmarks/run.py saves (no benchmark is run):
the header dates the run and describes its host, a scenario the run did not have renders
nothing, `--docs` rewrites only the generated part of docs/benchmarks.md, and the page's
headings that other files link to exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

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

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "benchmarks.md"

XEON_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni
"""


def _results() -> dict[str, Any]:
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
    text = write_markdown(results=_results(), out=tmp_path)
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
    markdown = write_markdown(results=_results(), out=out)
    write_docs(results=_results(), markdown=markdown, out=out, repo=tmp_path)
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
    write_docs(results=_results(), markdown=markdown, out=out, repo=tmp_path)
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
    results = {**_results(), "slowclients": {"phases": [phase], "service_nofile": 1024}}
    text = write_markdown(results=results, out=tmp_path)
    assert "## Slow HTTP clients against the metrics endpoint" in text
    assert (
        "| 1000 slow clients | 15.0 | 212 | 30 | 301.5 | 140 (0) | 1.2 / 4.8 / 9.0 | 10.0 "
        "| too_many 812 |"
    ) in text
