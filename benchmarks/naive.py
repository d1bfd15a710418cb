"""The naive baseline: what users write by hand, one thread per camera.

Each thread loops `cap.read()` (OpenCV's defaults: FFmpeg picks its own decoder threads),
`cv2.resize` to 448x448 and a synchronous `InferRequest.infer` on its own request of one
compiled model (THROUGHPUT hint, the same u8 NHWC pre-processing as the service, so the
comparison is about the architecture, not about float conversion in Python).

Two modes, run in a subprocess of their own (`python -m benchmarks.naive ...`, JSON on stdout):

* `throughput`: files read as fast as the thread can go (every frame read is inferred),
  looping at the end; frames/s in total and per camera.
* `capacity`: live streams (RTSP at 25 fps); every frame is read (it must be, to keep up with
  the stream), every `--every`-th one inferred; inferences/s per camera.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from typing import TYPE_CHECKING

import cv2
import numpy as np
import openvino as ov
from openvino.preprocess import PrePostProcessor

if TYPE_CHECKING:
    from collections.abc import Sequence

INPUT_SIZE = (448, 448)


def compile_model(*, xml: str, device: str) -> ov.CompiledModel:
    core = ov.Core()
    model = core.read_model(xml)
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    return core.compile_model(ppp.build(), device, {"PERFORMANCE_HINT": "THROUGHPUT"})


class Camera(threading.Thread):
    """One hand-written camera loop."""

    def __init__(
        self, *, url: str, compiled: ov.CompiledModel, every: int, loop_file: bool, index: int
    ) -> None:
        super().__init__(name=f"naive-{index}", daemon=True)
        self._url = url
        self._request = compiled.create_infer_request()
        self._every = every
        self._loop_file = loop_file
        self.inferred = 0
        self.read = 0
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        cap = cv2.VideoCapture(self._url)
        count = 0
        while not self.stop.is_set():
            ok, frame = cap.read()
            if not ok:
                if not self._loop_file:
                    self.errors += 1
                    return
                cap.release()
                cap = cv2.VideoCapture(self._url)
                continue
            self.read += 1
            count += 1
            if count % self._every:
                continue
            small = cv2.resize(frame, INPUT_SIZE)
            self._request.infer({0: np.expand_dims(small, 0)})
            self.inferred += 1
        cap.release()


def measure(
    *, urls: Sequence[str], xml: str, device: str, every: int, loop_file: bool,
    warmup_s: float, seconds: float,
) -> dict[str, object]:  # fmt: skip
    compiled = compile_model(xml=xml, device=device)
    cameras = [
        Camera(url=url, compiled=compiled, every=every, loop_file=loop_file, index=i)
        for i, url in enumerate(urls)
    ]
    for camera in cameras:
        camera.start()
    time.sleep(warmup_s)
    start_counts = [camera.inferred for camera in cameras]
    started = time.monotonic()
    cpu_before = _cpu_s()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    cpu_cores = (_cpu_s() - cpu_before) / elapsed
    rates = [
        (camera.inferred - before) / elapsed
        for camera, before in zip(cameras, start_counts, strict=True)
    ]
    for camera in cameras:
        camera.stop.set()
    for camera in cameras:
        camera.join(5.0)
    return {
        "cameras": len(urls),
        "total_fps": sum(rates),
        "per_camera": rates,
        "errors": sum(camera.errors for camera in cameras),
        "cpu_cores_used": cpu_cores,
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--every", type=int, default=1, help="infer every Nth frame read")
    parser.add_argument("--loop-file", action="store_true")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = measure(
        urls=args.url,
        xml=args.model,
        device=args.device,
        every=args.every,
        loop_file=args.loop_file,
        warmup_s=args.warmup,
        seconds=args.seconds,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
