"""The detector: the compiled model's requests, run from an asyncio loop.

Owns the `AsyncInferQueue` and the bridge that hands its callbacks back to the asyncio loop
with `call_soon_threadsafe`: request permits, partial batches, request timeouts. Compiling
the model (device string, performance hint, batch reshape, pre-processing in the graph,
model cache) is `edge_facedet.inference.compilation`'s; `model info`'s descriptions of
devices and model files are here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import openvino as ov

from edge_facedet.inference.compilation import (
    CompileOptions,
    DetectorInfo,
    bgr_u8_nhwc_input,
    compile_detector_model,
    precision_of,
)
from edge_facedet.inference.postprocess import split_batch

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from numpy.typing import NDArray

log = logging.getLogger(__name__)

# DetectorInfo is the type of `OpenVinoDetector.info`, so it is importable from here too.
__all__ = [
    "BatchResult",
    "Detector",
    "DetectorInfo",
    "OpenVinoDetector",
    "describe_devices",
    "describe_model",
]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One request's result: per submitted image, candidate rows (M, 5) = conf + box."""

    rows: list[NDArray[np.float32]]
    inference_seconds: float
    """From handing the batch to OpenVINO to its completion callback."""


class Detector(Protocol):
    """What the scheduler needs from a detector; tests inject fakes through this."""

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) the frames must have."""
        ...

    @property
    def batch_size(self) -> int: ...

    @property
    def max_inflight(self) -> int:
        """How many `detect` calls may usefully run at once."""
        ...

    async def detect(self, images: Sequence[NDArray[np.uint8]]) -> BatchResult:
        """Detect faces in up to `batch_size` images of `input_size`."""
        ...


@dataclass(slots=True)
class _PendingRequest:
    """One started request, as the completion callback and the awaiting caller share it."""

    future: asyncio.Future[tuple[NDArray[np.float32], float]]
    tensor: NDArray[np.uint8]
    """Kept alive until the request finishes: OpenVINO reads it in place (share_inputs)."""
    started: float = 0.0
    permit_returned: bool = False
    number: int = 0
    """Start order, for the detector's deadline sweep."""
    deadline: float = 0.0
    """Loop time by which the result must be in (`request_timeout_s` after the start)."""


class OpenVinoDetector:
    """face-detection-0204 compiled for a device, behind an `AsyncInferQueue`.

    Construction reads and compiles the model (`compile_detector_model`), which blocks for up
    to seconds: create it with `await asyncio.to_thread(OpenVinoDetector, ...)` from async
    code. `detect` must then be called from one event loop only. The keywords besides
    `model_xml`, `request_timeout_s` and `core` are those of `CompileOptions`.
    """

    def __init__(
        self,
        *,
        model_xml: Path,
        device: str = "AUTO",
        performance_hint: str = "THROUGHPUT",
        batch_size: int = 1,
        infer_requests: int | None = None,
        cache_dir: Path | None = None,
        inference_threads: int | None = None,
        request_timeout_s: float = 10.0,
        core: ov.Core | None = None,
    ) -> None:
        options = CompileOptions.parse(
            device=device,
            performance_hint=performance_hint,
            batch_size=batch_size,
            infer_requests=infer_requests,
            inference_threads=inference_threads,
            cache_dir=cache_dir,
        )
        self._core = core or ov.Core()
        model = compile_detector_model(
            model_xml=model_xml,
            options=options,
            core=self._core,
            preprocessing=self._build_preprocessing,
        )
        self.info: DetectorInfo = model.info
        self._input_size = model.input_size
        self._batch_size = options.batch_size
        self._infer_requests = model.infer_requests
        self._request_timeout_s = request_timeout_s
        self._compiled = model.compiled  # kept alive for as long as its requests run
        self._queue = ov.AsyncInferQueue(self._compiled, self._infer_requests)
        self._queue.set_callback(self._on_request_done)
        # The queue's requests and its start, past OpenVINO's Python wrappers: those wrap
        # the request anew on each access and dispatch the (here empty) inputs again, for
        # every frame on the event loop; the inputs are set on the request beforehand.
        native: Any = super(ov.AsyncInferQueue, self._queue)  # untyped in OpenVINO's stubs
        self._requests: list[Any] = [native.__getitem__(i) for i in range(self._infer_requests)]
        self._start_async: Callable[[dict[int, Any], _PendingRequest], None] = native.start_async
        self._loop: asyncio.AbstractEventLoop | None = None
        self._free_requests: asyncio.Semaphore | None = None
        self._inflight = 0
        # Requests whose callers await them, by start number (so oldest first), and the one
        # timer that expires the oldest when its deadline passes (see `_sweep`).
        self._awaited: dict[int, _PendingRequest] = {}
        self._numbers = itertools.count()
        self._sweep_timer: asyncio.TimerHandle | None = None

    @staticmethod
    def _build_preprocessing(model: ov.Model) -> ov.Model:
        """An override point: the pre-processing built into the graph (`bgr_u8_nhwc_input`).

        benchmarks/detector_throughput.py overrides this (and `_check_frame_size`) for its
        variant with the resize in the graph too.
        """
        return bgr_u8_nhwc_input(model)

    def _check_frame_size(self, width_height: tuple[int, ...]) -> None:
        if width_height != self._input_size:
            raise ValueError(f"images must be {self._input_size} (w, h), got {width_height}")

    @property
    def input_size(self) -> tuple[int, int]:
        return self._input_size

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def max_inflight(self) -> int:
        return self._infer_requests

    @property
    def inflight(self) -> int:
        return self._inflight

    def _stack(self, images: Sequence[NDArray[np.uint8]]) -> NDArray[np.uint8]:
        count = len(images)
        if count == 0 or count > self._batch_size:
            raise ValueError(f"detect takes 1..{self._batch_size} images, got {count}")
        first = images[0]
        # Checked here, on the loop, so a bad frame raises ValueError to its caller instead of
        # a RuntimeError from inside OpenVINO after a request was taken (or being silently
        # cast by np.stack into a batch that the model misreads).
        for image in images:
            if image.dtype != np.uint8:
                raise ValueError(f"images must be uint8 BGR, got {image.dtype}")
            if image.ndim != 3 or image.shape[2] != 3 or image.shape != first.shape:
                raise ValueError(f"images must be HxWx3 of one size, got {image.shape}")
        self._check_frame_size(first.shape[1::-1])
        if count == self._batch_size:
            if count == 1:
                return np.ascontiguousarray(first[np.newaxis])
            return np.stack(images)
        # A partial batch: the compiled model has a fixed batch, so pad with black frames.
        batch = np.zeros((self._batch_size, *first.shape), np.uint8)
        for i, image in enumerate(images):
            batch[i] = image
        return batch

    async def detect(self, images: Sequence[NDArray[np.uint8]]) -> BatchResult:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._free_requests = asyncio.Semaphore(self._infer_requests)
        elif self._loop is not loop:
            raise RuntimeError("OpenVinoDetector.detect was called from a second event loop")
        assert self._free_requests is not None  # noqa: S101 - set together with _loop
        tensor = self._stack(images)
        # The semaphore holds a caller until a request is free, so start_async never blocks
        # the loop; it is released from the completion callback, not here, because a
        # cancelled caller's request keeps running.
        await self._free_requests.acquire()
        pending = _PendingRequest(future=loop.create_future(), tensor=tensor)
        try:
            # AsyncInferQueue marks a request idle just after our callback returns; the permit
            # can arrive a moment earlier, and start_async would then block the loop.
            # No event exists for that moment, hence the short poll (it ends within
            # microseconds).
            while not self._queue.is_ready():  # noqa: ASYNC110
                await asyncio.sleep(0.0002)
            # The request start_async is about to take (it takes the one get_idle_request_id
            # names, as OpenVINO's own wrapper does) gets the frames as a shared tensor
            # directly: the wrapper's input dispatch (dict, singledispatch, checks) costs the
            # loop more than twice as much per call (see docs/benchmarks.md).
            request = self._requests[self._queue.get_idle_request_id()]
            request.set_input_tensor(ov.Tensor(tensor, shared_memory=True))
            pending.started = time.perf_counter()
            self._start_async({}, pending)
        except BaseException:
            # Cancelled while polling, or start_async refused the inputs: no request runs, so
            # no callback will return this permit; without this, each such cancellation
            # would lose a request for good (and with one request, hang every later call).
            self._free_requests.release()
            raise
        # _finish is scheduled on this loop by the callback, so it cannot run before this line.
        self._inflight += 1
        # AsyncInferQueue calls our callback only for requests that succeeded: a request that
        # failed on the device (GPU reset, NPU lost, out of memory) is marked idle without a
        # word. The sweep fails the caller and returns the permit, or every such failure
        # would take one request away until detection stopped altogether. (One timer for
        # all requests, not one per request nor asyncio.wait_for: those add a timer handle,
        # or a waiter future and callbacks, to every frame on the loop.)
        pending.number = next(self._numbers)
        pending.deadline = loop.time() + self._request_timeout_s
        self._awaited[pending.number] = pending
        if self._sweep_timer is None:
            self._sweep_timer = loop.call_at(pending.deadline, self._sweep)
        try:
            output, seconds = await pending.future
        finally:
            del self._awaited[pending.number]
        return BatchResult(rows=split_batch(output, batch=len(images)), inference_seconds=seconds)

    def _on_request_done(self, request: ov.InferRequest, userdata: Any) -> None:
        """Runs on an OpenVINO thread: copy the output out, hand it to the loop."""
        pending: _PendingRequest = userdata
        seconds = time.perf_counter() - pending.started
        loop = self._loop
        assert loop is not None  # noqa: S101 - detect() set it before any request started
        try:
            # The request's output buffer is reused by its next inference.
            output = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller, not lost
            loop.call_soon_threadsafe(self._finish, pending, None, exc)
            return
        loop.call_soon_threadsafe(self._finish, pending, (output, seconds), None)

    def _sweep(self) -> None:
        """Expire the awaited requests past their deadline; wake again at the next one."""
        self._sweep_timer = None
        loop = self._loop
        assert loop is not None  # noqa: S101 - set by the first detect()
        now = loop.time()
        for pending in list(self._awaited.values()):
            if pending.deadline > now:
                self._sweep_timer = loop.call_at(pending.deadline, self._sweep)
                return
            self._expire(pending)  # its caller wakes and stops awaiting it

    def _expire(self, pending: _PendingRequest) -> None:
        if pending.future.done():
            return
        self._return_permit(pending)
        pending.future.set_exception(
            RuntimeError(
                f"inference request gave no result within {self._request_timeout_s:.0f} s "
                "(failed on the device?)"
            )
        )

    def _return_permit(self, pending: _PendingRequest) -> None:
        if pending.permit_returned:
            return
        pending.permit_returned = True
        self._inflight -= 1
        assert self._free_requests is not None  # noqa: S101
        self._free_requests.release()

    def _finish(
        self,
        pending: _PendingRequest,
        result: tuple[NDArray[np.float32], float] | None,
        error: BaseException | None,
    ) -> None:
        self._return_permit(pending)
        future = pending.future
        if future.done():  # the caller was cancelled or gave up waiting
            return
        if error is not None:
            future.set_exception(error)
        elif result is not None:
            future.set_result(result)

    def wait_idle(self) -> None:
        """Block until every started request has finished (shutdown, from a worker thread)."""
        try:
            self._queue.wait_all()
        except RuntimeError as exc:
            # wait_all re-raises a failure of any request; at shutdown there is nobody left
            # to hand it to, and it must not turn a clean stop into a failed exit.
            log.warning("an inference request had failed: %s", exc)


def describe_devices(core: ov.Core | None = None) -> dict[str, str]:
    """Every device OpenVINO sees, with its full name."""
    core = core or ov.Core()
    return {
        device: str(core.get_property(device, "FULL_DEVICE_NAME"))
        for device in core.available_devices
    }


def describe_model(model_xml: Path, core: ov.Core | None = None) -> dict[str, Any]:
    """Inputs, outputs and precision of a model file, for `model info`."""
    core = core or ov.Core()
    model = core.read_model(model_xml)
    return {
        "model": str(model_xml),
        "name": model.get_friendly_name(),
        "precision": precision_of(model_xml),
        "inputs": [
            {
                "name": port.get_any_name(),
                "shape": str(port.partial_shape),
                "type": port.element_type.get_type_name(),
            }
            for port in model.inputs
        ],
        "outputs": [
            {
                "name": port.get_any_name(),
                "shape": str(port.partial_shape),
                "type": port.element_type.get_type_name(),
            }
            for port in model.outputs
        ],
    }
