"""The benchmark report's tables: one function per scenario, each reading the results dict.

Each section renders what a run recorded (benchmarks/run.py's `results`, saved as
results.json) and returns nothing for a scenario the run did not have, so a partial run or
an older results.json renders what it holds. benchmarks/report.py puts them together.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

TARGET_THROUGHPUT = 0.90
TARGET_CAPACITY = 0.90
TARGET_P99_MS = 50.0
TARGET_PEAK_MB = 400.0
TARGET_GROWTH_PCT = 5.0


def _thread_split(cores: dict[str, float] | None) -> str:
    if not cores:
        return "-"
    return " / ".join(fmt(cores.get(role), 2) for role in ("readers", "event_loop", "other"))


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "-"
    return f"{number:.{digits}f}"


def verdict(*, ok: bool) -> str:
    return "met" if ok else "**not met**"


def ceilings_section(results: dict[str, Any]) -> list[str]:
    ceil = results.get("ceilings")
    if not ceil:
        return []
    inf = ceil["inference_fps"]
    lines = [
        "## Ceilings",
        "",
        (
            f"Inference (benchmark_app, FP16-INT8, CPU, THROUGHPUT): best {fmt(inf['best'])} "
            f"/ median {fmt(inf['median'])} inferences/s "
            f"({fmt(ceil['infer_ms_per_frame'], 2)} core-ms per inference)."
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
            f"| {name} | {fmt(costs['grab']['best'], 2)} (med {fmt(costs['grab']['median'], 2)})"
            f" | {fmt(costs['bgr']['best'], 2)} | {fmt(costs['resize']['best'], 2)} "
            f"| {fmt(c['decode_fps'])} | {fmt(c['combined_fps'])} "
            f"| {fmt(c['predicted_capacity'])} |"
        )
    live = ceil.get("live_720p")
    if live:
        lines += [
            "",
            (
                f"Live: {live['streams']} 720p RTSP streams read in real time, one thread "
                f"each: grab {fmt(live['grab_ms'], 2)} ms per frame (clip read flat out: "
                f"{fmt(ceil['decode_ms']['720p']['grab']['best'], 2)}), slowest stream "
                f"{fmt(live['fps'])} frames/s; predicted capacity with the live grab cost "
                f"{fmt(live['predicted_capacity'])}."
            ),
        ]
    return [*lines, ""]


def throughput_section(results: dict[str, Any]) -> list[str]:
    tp = results.get("throughput") or {}
    naive = results.get("naive") or {}
    if not tp and not naive:
        return []
    ceil = results.get("ceilings")
    combined = ceil["720p"]["combined_fps"] if ceil else None
    lines = [
        "## Throughput, 720p, every frame inferred (frames/s)",
        "",
        f"Combined ceiling 1/(1/decode + 1/inference): {fmt(combined)} fps.",
        "",
        (
            "| cameras | service best | service median | ratio to ceiling | "
            "naive best | naive median | service / naive | service CPU cores "
            "| frames per CPU-s, service / naive |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count in sorted({*tp, *naive}, key=int):
        s = tp.get(count, {})
        n = naive.get(count, {})
        ratio = s.get("best", 0) / combined if combined and s else None
        vs = s.get("best", 0) / n["best"] if s and n else None
        lines.append(
            f"| {count} | {fmt(s.get('best'))} "
            f"| {fmt(s.get('median'))} | {fmt(ratio, 2)} | {fmt(n.get('best'))} "
            f"| {fmt(n.get('median'))} | {fmt(vs, 2)} | {fmt(s.get('cpu_cores_used'), 2)} "
            f"| {fmt(s.get('fps_per_core'))} / {fmt(n.get('fps_per_core'))} |"
        )
    if "8" in tp and combined:
        ok = tp["8"]["best"] / combined >= TARGET_THROUGHPUT
        lines += ["", f"Target: 8 cameras >= {TARGET_THROUGHPUT} x ceiling: {verdict(ok=ok)}."]
    return [*lines, ""]


def capacity_section(results: dict[str, Any]) -> list[str]:
    cap = results.get("capacity")
    if not cap:
        return []
    ceil = results.get("ceilings") or {}
    predicted = ceil.get("720p", {}).get("predicted_capacity")
    live_pred = ceil.get("live_720p", {}).get("predicted_capacity")
    sub_pred = ceil.get("360p", {}).get("predicted_capacity")
    measured = cap.get("capacity")
    naive = results.get("naive_capacity", {}).get("capacity")
    sub = results.get("substream_capacity", {}).get("capacity")
    dec = results.get("decoder_capacity", {}).get("capacity")
    lines = [
        "## Capacity: 720p@25 RTSP cameras at detect_fps 5, every camera >= 4.5/s",
        "",
        "| what | cameras | predicted | ratio |",
        "|---|---:|---:|---:|",
        _capacity_row("service, 720p main stream", measured, predicted),
        f"| naive baseline, 720p | {naive if naive is not None else '-'} | | |",
    ]
    if live_pred and measured is not None:
        lines.append(
            _capacity_row("service, 720p, against the live grab cost", measured, live_pred)
        )
    if sub is not None:
        lines.append(_capacity_row("service, `detect_url` 640x360 substream", sub, sub_pred))
    if dec is not None:
        name = "service, 720p, `decoder: pyav` + `skip_loop_filter`"
        lines.append(_capacity_row(name, dec, predicted))
    if predicted and measured is not None:
        ok = measured / predicted >= TARGET_CAPACITY
        lines += ["", f"Target: >= {TARGET_CAPACITY} x predicted: {verdict(ok=ok)}."]
        if dec is not None:
            ok = dec / predicted >= TARGET_CAPACITY
            lines.append(f"With `decoder: pyav` + `skip_loop_filter`: {verdict(ok=ok)}.")
    return [*lines, "", *_capacity_steps(results), ""]


def _capacity_row(what: str, cameras: float | None, predicted: float | None) -> str:
    ratio = cameras / predicted if cameras is not None and predicted else None
    shown = cameras if cameras is not None else "-"
    return f"| {what} | {shown} | {fmt(predicted)} | {fmt(ratio, 2)} |"


def _capacity_steps(results: dict[str, Any]) -> list[str]:
    lines = [
        "Search steps:",
        "",
        (
            "| run | cameras | passed | total fps | slowest camera fps | CPU cores "
            "| readers / event loop / inference + other cores "
            "| RTSP server + broker + subscriber cores | frames read per camera/s "
            "| stale (not detected)/s | p99 ms |"
        ),
        "|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name in ("capacity", "naive_capacity", "substream_capacity", "decoder_capacity"):
        lines += [
            f"| {name} | {step['cameras']} | {step['passed']} | {fmt(step['total_fps'])} "
            f"| {fmt(step['min_camera_fps'], 2)} | {fmt(step.get('cpu_cores_used'), 2)} "
            f"| {_thread_split(step.get('thread_cores'))} "
            f"| {fmt(sum(step.get('neighbour_cores', {}).values()) or None, 2)} "
            f"| {fmt(step.get('grabbed_per_camera_s'))} | {fmt(step.get('stale_per_s'))} "
            f"| {fmt(step.get('p99_ms'))} |"
            for step in results.get(name, {}).get("steps", [])
        ]
    return lines


def decoders_section(results: dict[str, Any]) -> list[str]:
    decoders = results.get("decoders")
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
        f"| {row['setting']} | {row['cameras']} | {fmt(row['detect_fps'])} "
        f"| {fmt(row.get('grabbed_per_camera_s'))} | {fmt(row.get('reader_ms_per_camera_s'))} "
        f"| {fmt(row['min_camera_fps'], 2)} | {fmt(row.get('cpu_cores_used'), 2)} "
        f"| {fmt(row.get('stale_per_s'))} | {fmt(row.get('p99_ms'))} |"
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


def latency_section(results: dict[str, Any]) -> list[str]:
    lat = results.get("latency")
    if not lat:
        return []
    lines = [
        "## Latency, capture -> MQTT receipt",
        "",
        f"Loads are shares of the measured capacity, {lat['capacity']} cameras.",
        "",
        (
            "| load | cameras | messages | p50 ms | p95 ms | p99 ms | in-service p99 ms "
            "| stale (not detected)/s | slowest camera fps |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {share} | {row['cameras']} | {row['messages']} | {fmt(row['p50_ms'])} "
        f"| {fmt(row['p95_ms'])} | {fmt(row['p99_ms'])} | {fmt(row['internal_p99_ms'])} "
        f"| {fmt(row.get('stale_per_s'))} | {fmt(row['min_camera_fps'], 2)} |"
        for share, row in lat["rows"].items()
    ]
    if "80%" in lat["rows"]:
        ok = lat["rows"]["80%"]["p99_ms"] <= TARGET_P99_MS
        lines += ["", f"Target: p99 <= {TARGET_P99_MS:g} ms at 80%: {verdict(ok=ok)}."]
    return [*lines, ""]


def memory_section(results: dict[str, Any]) -> list[str]:
    mem = results.get("memory")
    if not mem:
        return []
    ok_peak = mem["peak_rss_mb"] <= TARGET_PEAK_MB
    ok_growth = mem["growth_pct"] < TARGET_GROWTH_PCT
    return [
        "## Memory",
        "",
        f"{mem['cameras']} RTSP cameras at detect_fps 5 for {mem['seconds'] / 60:.0f} min.",
        "",
        "| peak RSS MB | RSS after warm-up MB | RSS at end MB | growth % | slowest camera fps |",
        "|---:|---:|---:|---:|---:|",
        (
            f"| {fmt(mem['peak_rss_mb'])} | {fmt(mem['rss_start_mb'])} | {fmt(mem['rss_end_mb'])} "
            f"| {fmt(mem['growth_pct'], 2)} | {fmt(mem['min_camera_fps'], 2)} |"
        ),
        "",
        (
            f"Targets: peak <= {TARGET_PEAK_MB:g} MB: {verdict(ok=ok_peak)}; growth < "
            f"{TARGET_GROWTH_PCT:g}%: {verdict(ok=ok_growth)}."
        ),
        "",
    ]


def slowclients_section(results: dict[str, Any]) -> list[str]:
    slow = results.get("slowclients")
    if not slow:
        return []
    lines = [
        "## Slow HTTP clients against the metrics endpoint",
        "",
        (
            f"The service under a soft limit of {slow.get('service_nofile', '?')} descriptors, "
            "two looping file cameras, `/metrics` scraped every 0.1 s (benchmarks/slowclients.py)."
        ),
        "",
        (
            "| phase | s | descriptors max | threads max | RSS max MiB | scrapes (failed) "
            "| /metrics p50 / p99 / max ms | inferred/s | dropped connections |"
        ),
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    lines += [
        f"| {p['phase']} | {fmt(p.get('seconds'))} | {p.get('fds_max', '-')} "
        f"| {p.get('threads_max', '-')} | {fmt(p.get('rss_max_mib'))} "
        f"| {p.get('scrapes', '-')} ({p.get('scrapes_failed', '-')}) "
        f"| {fmt(p.get('metrics_p50_ms'))} / {fmt(p.get('metrics_p99_ms'))} "
        f"/ {fmt(p.get('metrics_max_ms'))} | {fmt(p.get('inferred_per_s'))} "
        f"| {', '.join(f'{k} {v:g}' for k, v in p.get('dropped', {}).items()) or '-'} |"
        for p in slow.get("phases", [])
    ]
    return [*lines, ""]


SECTIONS: tuple[Callable[[dict[str, Any]], list[str]], ...] = (
    ceilings_section,
    throughput_section,
    capacity_section,
    decoders_section,
    latency_section,
    memory_section,
    slowclients_section,
)
