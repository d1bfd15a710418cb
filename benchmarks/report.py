"""The benchmark's output: the markdown tables, the PNG chart, and docs/benchmarks.md.

Owns presentation only: everything here reads the `results` dictionary that benchmarks/run.py
accumulated (and saved as results.json), so a report can be redrawn from a saved run.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

TARGET_THROUGHPUT = 0.90
TARGET_CAPACITY = 0.90
TARGET_P99_MS = 50.0
TARGET_PEAK_MB = 400.0
TARGET_GROWTH_PCT = 5.0
NOTES_MARKER = "<!-- notes: kept when the results above are regenerated -->"


def _thread_split(cores: dict[str, float] | None) -> str:
    if not cores:
        return "-"
    return " / ".join(_f(cores.get(role), 2) for role in ("readers", "event_loop", "other"))


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "-"
    return f"{number:.{digits}f}"


def _verdict(*, ok: bool) -> str:
    return "met" if ok else "**not met**"


def write_markdown(*, results: dict[str, Any], out: Path) -> str:  # noqa: PLR0912, PLR0915 - one section after another
    lines: list[str] = []
    m = results["machine"]
    lines += [
        f"# edge-facedet benchmark {results['started']}",
        "",
        (
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM; OpenVINO "
            f"{m['openvino']}, OpenCV {m['opencv']}, Python {m['python']}, kernel {m['kernel']}."
        ),
        "",
        "Load average (1/5/15 min) before each scenario: "
        + "; ".join(f"{k} {'/'.join(_f(x, 2) for x in v)}" for k, v in results["load"].items()),
        "",
    ]
    ceil = results.get("ceilings")
    if ceil:
        inf = ceil["inference_fps"]
        lines += [
            "## Ceilings",
            "",
            (
                f"Inference (benchmark_app, FP16-INT8, CPU, THROUGHPUT): best {_f(inf['best'])} "
                f"/ median {_f(inf['median'])} inferences/s "
                f"({_f(ceil['infer_ms_per_frame'], 2)} core-ms per inference)."
            ),
            "",
            (
                "| clip | grab ms | BGR ms | resize ms | decode ceiling fps | combined ceiling fps "
                "| predicted capacity (cams @25, detect 5) |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, costs in ceil["decode_ms"].items():
            c = ceil[name]
            lines.append(
                f"| {name} | {_f(costs['grab']['best'], 2)} (med {_f(costs['grab']['median'], 2)})"
                f" | {_f(costs['bgr']['best'], 2)} | {_f(costs['resize']['best'], 2)} "
                f"| {_f(c['decode_fps'])} | {_f(c['combined_fps'])} "
                f"| {_f(c['predicted_capacity'])} |"
            )
        live = ceil.get("live_720p")
        if live:
            lines += [
                "",
                (
                    f"Live: {live['streams']} 720p RTSP streams read in real time, one thread "
                    f"each: grab {_f(live['grab_ms'], 2)} ms per frame (clip read flat out: "
                    f"{_f(ceil['decode_ms']['720p']['grab']['best'], 2)}), slowest stream "
                    f"{_f(live['fps'])} frames/s; predicted capacity with the live grab cost "
                    f"{_f(live['predicted_capacity'])}."
                ),
            ]
        lines.append("")
    tp = results.get("throughput")
    naive = results.get("naive", {})
    if tp or naive:
        combined = ceil["720p"]["combined_fps"] if ceil else None
        lines += [
            "## Throughput, 720p, every frame inferred (frames/s)",
            "",
            f"Combined ceiling 1/(1/decode + 1/inference): {_f(combined)} fps.",
            "",
            (
                "| cameras | service best | service median | ratio to ceiling | "
                "naive best | naive median | service / naive | service CPU cores "
                "| frames per CPU-s, service / naive |"
            ),
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        counts = sorted({*(tp or {}), *naive}, key=int)
        for count in counts:
            s = (tp or {}).get(count, {})
            n = naive.get(count, {})
            ratio = s.get("best", 0) / combined if combined and s else None
            vs = s.get("best", 0) / n["best"] if s and n else None
            lines.append(
                f"| {count} | {_f(s.get('best'))} "
                f"| {_f(s.get('median'))} | {_f(ratio, 2)} | {_f(n.get('best'))} "
                f"| {_f(n.get('median'))} | {_f(vs, 2)} | {_f(s.get('cpu_cores_used'), 2)} "
                f"| {_f(s.get('fps_per_core'))} / {_f(n.get('fps_per_core'))} |"
            )
        if tp and "8" in tp and combined:
            ok = tp["8"]["best"] / combined >= TARGET_THROUGHPUT
            lines += ["", f"Target: 8 cameras >= {TARGET_THROUGHPUT} x ceiling: {_verdict(ok=ok)}."]
        lines.append("")
    cap = results.get("capacity")
    if cap:
        lines += ["## Capacity: 720p@25 RTSP cameras at detect_fps 5, every camera >= 4.5/s", ""]
        predicted = ceil["720p"]["predicted_capacity"] if ceil else None
        naive_cap = results.get("naive_capacity", {}).get("capacity")
        sub = results.get("substream_capacity", {}).get("capacity")
        sub_pred = ceil["360p"]["predicted_capacity"] if ceil else None
        lines += [
            "| what | cameras | predicted | ratio |",
            "|---|---:|---:|---:|",
            (
                f"| service, 720p main stream | {cap.get('capacity', '-')} | {_f(predicted)} "
                f"| {_f(cap.get('capacity', 0) / predicted if predicted else None, 2)} |"
            ),
            f"| naive baseline, 720p | {naive_cap if naive_cap is not None else '-'} | | |",
        ]
        live_pred = ceil.get("live_720p", {}).get("predicted_capacity") if ceil else None
        if live_pred and "capacity" in cap:
            lines.append(
                f"| service, 720p, against the live grab cost | {cap['capacity']} "
                f"| {_f(live_pred)} | {_f(cap['capacity'] / live_pred, 2)} |"
            )
        if sub is not None:
            lines.append(
                f"| service, `detect_url` 640x360 substream | {sub} | {_f(sub_pred)} "
                f"| {_f(sub / sub_pred if sub_pred else None, 2)} |"
            )
        dec = results.get("decoder_capacity", {}).get("capacity")
        if dec is not None:
            lines.append(
                f"| service, 720p, `decoder: pyav` + `skip_loop_filter` | {dec} | {_f(predicted)} "
                f"| {_f(dec / predicted if predicted else None, 2)} |"
            )
        if predicted and "capacity" in cap:
            ok = cap["capacity"] / predicted >= TARGET_CAPACITY
            lines += ["", f"Target: >= {TARGET_CAPACITY} x predicted: {_verdict(ok=ok)}."]
            if dec is not None:
                ok = dec / predicted >= TARGET_CAPACITY
                lines.append(f"With `decoder: pyav` + `skip_loop_filter`: {_verdict(ok=ok)}.")
        lines += ["", "Search steps:", ""]
        lines += [
            (
                "| run | cameras | passed | total fps | slowest camera fps | CPU cores "
                "| readers / event loop / inference + other cores "
                "| RTSP server + broker + subscriber cores | frames read per camera/s "
                "| stale (not detected)/s | p99 ms |"
            )
        ]
        lines += ["|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|"]
        for name in ("capacity", "naive_capacity", "substream_capacity", "decoder_capacity"):
            for step in results.get(name, {}).get("steps", []):
                lines.append(
                    f"| {name} | {step['cameras']} | {step['passed']} | {_f(step['total_fps'])} "
                    f"| {_f(step['min_camera_fps'], 2)} | {_f(step.get('cpu_cores_used'), 2)} "
                    f"| {_thread_split(step.get('thread_cores'))} "
                    f"| {_f(sum(step.get('neighbour_cores', {}).values()) or None, 2)} "
                    f"| {_f(step.get('grabbed_per_camera_s'))} | {_f(step.get('stale_per_s'))} "
                    f"| {_f(step.get('p99_ms'))} |"
                )
        lines.append("")
    lines += _decoders_section(results.get("decoders"))
    lat = results.get("latency")
    if lat:
        lines += [
            f"## Latency, capture -> MQTT receipt (capacity used: {lat['capacity']} cameras)",
            "",
            (
                "| load | cameras | messages | p50 ms | p95 ms | p99 ms | in-service p99 ms "
                "| stale (not detected)/s | slowest camera fps |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for share, row in lat["rows"].items():
            lines.append(
                f"| {share} | {row['cameras']} | {row['messages']} | {_f(row['p50_ms'])} "
                f"| {_f(row['p95_ms'])} | {_f(row['p99_ms'])} | {_f(row['internal_p99_ms'])} "
                f"| {_f(row.get('stale_per_s'))} | {_f(row['min_camera_fps'], 2)} |"
            )
        if "80%" in lat["rows"]:
            ok = lat["rows"]["80%"]["p99_ms"] <= TARGET_P99_MS
            lines += ["", f"Target: p99 <= {TARGET_P99_MS:g} ms at 80%: {_verdict(ok=ok)}."]
        lines.append("")
    mem = results.get("memory")
    if mem:
        ok_peak = mem["peak_rss_mb"] <= TARGET_PEAK_MB
        ok_growth = mem["growth_pct"] < TARGET_GROWTH_PCT
        lines += [
            f"## Memory: {mem['cameras']} RTSP cameras, {mem['seconds'] / 60:.0f} min",
            "",
            (
                "| peak RSS MB | RSS after warm-up MB | RSS at end MB | growth % "
                "| slowest camera fps |"
            ),
            "|---:|---:|---:|---:|---:|",
            (
                f"| {_f(mem['peak_rss_mb'])} | {_f(mem['rss_start_mb'])} | {_f(mem['rss_end_mb'])} "
                f"| {_f(mem['growth_pct'], 2)} | {_f(mem['min_camera_fps'], 2)} |"
            ),
            "",
            (
                f"Targets: peak <= {TARGET_PEAK_MB:g} MB: {_verdict(ok=ok_peak)}; growth < "
                f"{TARGET_GROWTH_PCT:g}%: {_verdict(ok=ok_growth)}."
            ),
            "",
        ]
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


def _decoders_section(decoders: dict[str, Any] | None) -> list[str]:
    if not decoders:
        return []
    lines = [
        "## Decoders: the same 720p@25 RTSP cameras read by each decoder setting",
        "",
        (
            "| decoder | cameras | detect_fps | frames decoded per camera/s "
            "| reader CPU ms per camera-second | slowest camera detections/s | CPU cores "
            "| stale/s | p99 ms |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row['setting']} | {row['cameras']} | {_f(row['detect_fps'])} "
        f"| {_f(row.get('grabbed_per_camera_s'))} | {_f(row.get('reader_ms_per_camera_s'))} "
        f"| {_f(row['min_camera_fps'], 2)} | {_f(row.get('cpu_cores_used'), 2)} "
        f"| {_f(row.get('stale_per_s'))} | {_f(row.get('p99_ms'))} |"
        for row in decoders["rows"]
    ]
    lines += [
        "",
        (
            "keyframes_only: the clips carry a keyframe every 2 s, so it detects 0.5 frames/s "
            "per camera, compared with OpenCV at detect_fps 0.5 (which decodes every frame)."
        ),
        "",
    ]
    return lines


def write_chart(*, results: dict[str, Any], out: Path) -> Path:
    import matplotlib as mpl  # noqa: PLC0415 - the bench extra; only needed here

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
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
    ax.set(title="Throughput, 720p, every frame inferred", xlabel="cameras", ylabel="frames/s")
    ax.legend()

    ax = axes[0][1]
    labels, values = [], []
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

    ax = axes[1][0]
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

    ax = axes[1][1]
    mem = results.get("memory")
    if mem:
        ax.plot([t for t, _ in mem["samples"]], [rss for _, rss in mem["samples"]])
        ax.axhline(TARGET_PEAK_MB, color="red", ls="--", label="peak target")
        ax.legend()
    ax.set(title="Service RSS, 16 cameras", xlabel="s", ylabel="MB")
    fig.tight_layout()
    path = out / "chart.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_docs(*, results: dict[str, Any], markdown: str, out: Path, repo: Path) -> Path:
    """docs/benchmarks.md: method, then this run's tables; notes below the marker are kept."""
    docs = repo / "docs" / "benchmarks.md"
    notes = ""
    if docs.exists():
        text = docs.read_text()
        if NOTES_MARKER in text:
            notes = text.split(NOTES_MARKER, 1)[1]
    chart = out / "chart.png"
    body = "\n".join(
        [
            "# Benchmarks",
            "",
            (
                "Generated by `python -m benchmarks.run --docs` (or `edge-facedet bench --docs`) "
                f"on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; raw figures and the chart "
                "are in "
                f"`{chart.relative_to(repo) if chart.is_relative_to(repo) else chart}` "
                "(results/ is not committed). The chart needs the bench extra: "
                "`.venv/bin/pip install -e '.[bench]'`; `--render results.json` redraws a run."
            ),
            "",
            METHOD,
            "",
            "# Latest full run",
            "",
            markdown.split("\n", 2)[2],
            "",
            NOTES_MARKER,
        ]
    )
    docs.write_text(body + (notes or "\n"))
    return docs


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
