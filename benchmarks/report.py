"""The benchmark's output: results.md, the PNG chart, and docs/benchmarks.md.

Owns presentation only: everything here reads the `results` dictionary that benchmarks/run.py
accumulated (and saved as results.json), so a report can be redrawn from a saved run. The
tables are benchmarks/report_sections.py's; this module adds the run's header (date, host),
the chart and the docs page.

docs/benchmarks.md has three parts: a hand-written preamble, the generated part (the method
and the latest run's tables, between GENERATED_MARKER and NOTES_MARKER), and hand-written
notes. `--docs` rewrites the generated part only.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.report_sections import (
    SECTIONS,
    TARGET_P99_MS,
    TARGET_PEAK_MB,
    fmt,
)

GENERATED_MARKER = "<!-- generated: `edge-facedet bench --docs` rewrites from here to the notes -->"
NOTES_MARKER = "<!-- notes: kept when the results above are regenerated -->"
DEFAULT_PREAMBLE = "# Benchmarks\n"
# /proc/cpuinfo flags that set OpenVINO's CPU kernels (INT8 dot products, bf16, matrix units).
ISA_FLAGS = (
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512_bf16", "AVX-512 bf16"),
    ("amx_tile", "AMX"),
)


def cpu_model(cpuinfo: str) -> str:
    """The CPU's model name in /proc/cpuinfo's text ("" when it has none)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return ""


def cpu_isa(cpuinfo: str) -> str:
    """The instruction sets that set OpenVINO's CPU speed, e.g. "AVX-512 VNNI, no bf16"."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    present = [label for flag, label in ISA_FLAGS if flag in flags]
    if "avx512f" in flags and "avx512_bf16" not in flags:
        # Where a CPU has bf16, OpenVINO infers in it by default, which moves speed and accuracy.
        present.append("no bf16")
    return ", ".join(present)


def run_date(results: dict[str, Any]) -> str:
    """When the run started, "2026-11-26 07:08 UTC", from results['started'] (20261126T070852Z)."""
    started = str(results.get("started", ""))
    try:
        when = datetime.strptime(started, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return started or "an unrecorded date"
    return f"{when:%Y-%m-%d %H:%M} UTC"


def host_line(results: dict[str, Any]) -> str:
    """The host in one line: CPU, cores, ISA, RAM, and the two speeds every figure depends on."""
    m = results.get("machine", {})
    parts = [m.get("cpu") or "unrecorded CPU", f"{m.get('cores', '?')} vCPUs"]
    parts += [m["isa"]] if m.get("isa") else []
    parts += [f"{m['ram_gb']} GB RAM"] if m.get("ram_gb") is not None else []
    speeds = []
    ceil = results.get("ceilings")
    if ceil:
        speeds.append(
            f"benchmark_app {fmt(ceil['inference_fps']['best'])} inferences/s "
            f"({fmt(ceil['infer_ms_per_frame'], 2)} core-ms each)"
        )
        grab = f"720p grab {fmt(ceil['decode_ms']['720p']['grab']['best'], 2)} ms read flat out"
        live = ceil.get("live_720p")
        if live:
            grab += f", {fmt(live['grab_ms'], 2)} ms live ({live['streams']} streams)"
        speeds.append(grab)
    return "Host: " + "; ".join([", ".join(parts), *speeds]) + "."


def read_cpuinfo() -> str:
    """This host's /proc/cpuinfo ("" where there is none): run.py records its model and ISA."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def write_markdown(*, results: dict[str, Any], out: Path) -> str:
    """results.md: the run's header, then one section per scenario the run has."""
    lines = [f"# edge-facedet benchmark {run_date(results)}", "", *_header(results)]
    for section in SECTIONS:
        lines += section(results)
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


def _header(results: dict[str, Any]) -> list[str]:
    m = results.get("machine", {})
    settings = results.get("settings", {})
    run = f"Run: started {run_date(results)}"
    if settings.get("scenarios"):
        run += "; scenarios " + ", ".join(settings["scenarios"])
    run += "; `--quick`" if settings.get("quick") else ""
    run += "; `--long`" if settings.get("long") else ""
    lines = [f"{run}.", "", host_line(results), ""]
    if results.get("reused_from"):
        lines += [f"Scenarios not run then were taken from `{results['reused_from']}`.", ""]
    lines += [
        (
            f"Software: OpenVINO {m.get('openvino', '?')}, OpenCV {m.get('opencv', '?')}, "
            f"Python {m.get('python', '?')}, kernel {m.get('kernel', '?')}."
        ),
        "",
        "Load average (1/5/15 min) before each scenario: "
        + "; ".join(f"{k} {'/'.join(fmt(x, 2) for x in v)}" for k, v in results["load"].items()),
        "",
    ]
    return lines


def write_chart(*, results: dict[str, Any], out: Path) -> Path:
    """chart.png: throughput, capacity, latency and memory, one panel each."""
    import matplotlib as mpl  # noqa: PLC0415 - the bench extra; only needed here

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    _plot_throughput(axes[0][0], results)
    _plot_capacity(axes[0][1], results)
    _plot_latency(axes[1][0], results)
    _plot_memory(axes[1][1], results)
    fig.tight_layout()
    path = out / "chart.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_throughput(ax: Any, results: dict[str, Any]) -> None:
    tp = results.get("throughput", {})
    naive = results.get("naive", {})
    ceil = results.get("ceilings")
    if tp:
        counts = sorted(tp, key=int)
        ax.plot([int(c) for c in counts], [tp[c]["best"] for c in counts], "o-", label="service")
    if naive:
        counts = sorted(naive, key=int)
        ax.plot([int(c) for c in counts], [naive[c]["best"] for c in counts], "s-", label="naive")
    if ceil:
        ax.axhline(ceil["720p"]["combined_fps"], color="gray", ls="--", label="combined ceiling")
        ax.axhline(ceil["inference_fps"]["best"], color="gray", ls=":", label="inference only")
    track = results.get("tracking")
    if track:
        # Every run of each arm at its camera count: the spread shows beside the median.
        for arm, marker in (("off", "x"), ("on", "+")):
            fps = [run["total_fps"] for run in track["runs"].get(arm, []) if run["total_fps"]]
            label = "tracking off" if arm == "off" else "tracking + crop snapshots"
            ax.plot([track["cameras"]] * len(fps), fps, marker, ms=9, label=label)
    ax.set(title="Throughput, 720p, every frame inferred", xlabel="cameras", ylabel="frames/s")
    ax.legend()


def _plot_capacity(ax: Any, results: dict[str, Any]) -> None:
    labels, values = [], []
    ceil = results.get("ceilings")
    if ceil:
        labels.append("predicted\n720p")
        values.append(ceil["720p"]["predicted_capacity"])
    for name, label in (
        ("capacity", "service\n720p"),
        ("naive_capacity", "naive\n720p"),
        ("substream_capacity", "service\n360p sub"),
        ("decoder_capacity", "service\npyav no-LF"),
    ):
        if "capacity" in results.get(name, {}):
            labels.append(label)
            values.append(results[name]["capacity"])
    ax.bar(labels, values, color=["gray", "C0", "C1", "C2", "C3"][: len(values)])
    ax.set(title="Capacity: cameras @25 fps, detect 5/s", ylabel="cameras")


def _plot_latency(ax: Any, results: dict[str, Any]) -> None:
    lat = results.get("latency", {}).get("rows", {})
    if lat:
        shares = list(lat)
        for i, q in enumerate(("p50_ms", "p95_ms", "p99_ms")):
            ax.bar([j + i * 0.25 for j in range(len(shares))], [lat[s][q] for s in shares], 0.25,
                   label=q.removesuffix("_ms"))  # fmt: skip
        ticks = [share.replace(", ", "\n") for share in shares]
        ax.set_xticks([j + 0.25 for j in range(len(shares))], ticks)
        ax.axhline(TARGET_P99_MS, color="red", ls="--", label="p99 target")
        ax.legend()
    ax.set(title="Latency capture -> MQTT receipt", ylabel="ms")


def _plot_memory(ax: Any, results: dict[str, Any]) -> None:
    mem = results.get("memory")
    if mem:
        ax.plot([t for t, _ in mem["samples"]], [rss for _, rss in mem["samples"]], label="memory")
    snaps = results.get("memory_snapshots")
    for mode, runs in (snaps or {}).get("runs", {}).items():
        for number, run in enumerate(runs, start=1):
            times, rss = [t for t, _ in run["samples"]], [mb for _, mb in run["samples"]]
            style = "-" if mode == "crop" else ":"
            ax.plot(times, rss, ls=style, label=f"snapshots {mode} #{number}")
    if mem or snaps:
        ax.axhline(TARGET_PEAK_MB, color="red", ls="--", label="peak target")
        ax.legend()
    cameras = (mem or snaps or {}).get("cameras", "-")
    ax.set(title=f"Service RSS, {cameras} cameras", xlabel="s", ylabel="MB")


def write_docs(*, results: dict[str, Any], markdown: str, out: Path, repo: Path) -> Path:
    """docs/benchmarks.md: the preamble and the notes kept, the method and this run between."""
    docs = repo / "docs" / "benchmarks.md"
    preamble, notes = kept_parts(docs.read_text() if docs.exists() else "")
    results_json = out / "results.json"
    shown = results_json.relative_to(repo) if results_json.is_relative_to(repo) else results_json
    body = "\n".join(
        [
            preamble.rstrip("\n"),
            "",
            GENERATED_MARKER,
            "",
            METHOD,
            "",
            "# Latest full run",
            "",
            (
                f"Generated by `edge-facedet bench --docs` from `{shown}` (results/ is not "
                "committed). The chart needs the bench extra: "
                "`.venv/bin/pip install -e '.[bench]'`; `--render results.json` redraws a run."
            ),
            "",
            markdown.split("\n", 2)[2].rstrip("\n"),
            "",
            NOTES_MARKER,
        ]
    )
    docs.write_text(body + (notes or "\n"))
    return docs


def kept_parts(text: str) -> tuple[str, str]:
    """The hand-written preamble (before GENERATED_MARKER) and notes (after NOTES_MARKER).

    A page without the generated marker keeps only its notes, under the default title.
    """
    preamble = text.split(GENERATED_MARKER, 1)[0] if GENERATED_MARKER in text else ""
    notes = text.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in text else ""
    return preamble or DEFAULT_PREAMBLE, notes


METHOD = """## Method

All clips are made with ffmpeg from the shared hikers footage (many frontal faces), H.264,
25 fps, GOP 50, no B-frames, capped bitrate like a camera's encoder: 720p at 3.75 Mbit/s,
1080p at 6 Mbit/s, a 640x360 substream at 0.8 Mbit/s. They are cached in results/bench-cache.
Live cameras are mounts of the GStreamer RTSP server the tests use (one mount per camera).

* **Inference ceiling**: `benchmark_app -hint throughput -d CPU` on face-detection-0204
  FP16-INT8, the service's model, device and hint.
* **Decode ceiling**: one capture, `CAP_PROP_N_THREADS=1`, CPU time of the reading thread
  per frame for `grab()` (demux + decode), `retrieve()` (BGR) and the resize to 448x448.
  Decode ceiling = cores / (grab + BGR); combined ceiling = 1 / (1/decode + 1/inference);
  predicted capacity = cores / (25 x grab + 5 x (BGR + inference core-ms)).
* **Live grab cost**: as many 720p RTSP streams as the predicted capacity, read in real time,
  one capture and thread each, decoding only (no detector): CPU time of `grab()` per frame.
  A clip read flat out keeps the decoder's state hot in the caches; a live reader decodes one
  frame every 40 ms between other threads' work, which costs more per frame. The capacity
  predicted with this cost is shown beside the file-based one.
* **Naive baseline** (benchmarks/naive.py): one thread per camera, `cap.read()` with OpenCV's
  defaults, `cv2.resize`, synchronous `infer` on one InferRequest per thread of one compiled
  model (THROUGHPUT hint, u8 NHWC input like the service). On files it reads as fast as it
  can: every frame read is inferred.
* **Service**: `edge-facedet run` with a generated config (device CPU, THROUGHPUT hint,
  publish policy every_frame, metrics on, the local Mosquitto), counted from outside by an
  MQTT subscriber that timestamps every faces message on receipt.
* **Throughput, every frame inferred**: N file cameras on the same 720p clip, looping, with
  `realtime: false` (a lossless file camera: its reader hands on the next frame only when
  the detector has taken the previous one, so nothing is decoded in vain) and detect_fps 25,
  the clip's rate, so every frame read is converted, resized and inferred: as fast as the
  service can go, like the naive loop (which is pull-based too).
* **Capacity**: 720p@25 RTSP cameras at detect_fps 5; a count passes when every camera
  delivers >= 4.5 faces messages/s over the window (60 s in a full run). A reader that falls
  behind its stream (the RTSP server's socket holding the backlog) skips detecting the due
  frames it reads more than `max_lag_s` (0.5 s) late, so an over-capacity count fails on
  detections instead of passing on ever older frames; the table shows frames read per camera
  per second (25 when the readers keep up) and stale frames. The search starts at
  the predicted capacity and steps. The naive baseline's capacity uses the same streams,
  reading every frame and inferring every 5th.
* **Latency**: `capture_ts` in each payload (when the frame reached the host: the reader's
  grab, earlier by the reader's lag behind the stream by the stream's timestamps) to the
  subscriber's receipt, same machine and clock, at 50% and 80% of the measured capacity,
  and at 80% again with `reader_nice: 10` (decoding yields to inference). capture_ts has
  millisecond resolution (truncated), so figures are up to 1 ms high.
* **Memory**: 16 RTSP cameras at detect_fps 5; peak RSS is the process's VmHWM; growth is
  the median RSS of the last 30 s against the 30 s after the first tenth of the run
  (10 minutes with `--long`).
* **Substream**: the capacity search again with `detect_url` pointing at a 640x360 mount
  beside each camera's 720p `url`.
* **Decoders**: the same 720p RTSP cameras at 80 % of the measured capacity read with
  `decoder: opencv`, `pyav` and `pyav` + `skip_loop_filter` (readers' CPU per
  camera-second from /proc); 16 cameras with `keyframes_only` (detect_fps 5, so every
  keyframe, one per 2 s, is due) beside OpenCV at detect_fps 0.5; and the capacity search
  again with `pyav` + `skip_loop_filter`."""


def main() -> int:
    """Redraw a saved run: `python -m benchmarks.report results/bench-*/results.json [--docs]`."""
    path = Path(sys.argv[1])
    results = json.loads(path.read_text())
    markdown = write_markdown(results=results, out=path.parent)
    write_chart(results=results, out=path.parent)
    if "--docs" in sys.argv[2:]:
        write_docs(
            results=results, markdown=markdown, out=path.parent,
            repo=Path(__file__).resolve().parents[1],
        )  # fmt: skip
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
