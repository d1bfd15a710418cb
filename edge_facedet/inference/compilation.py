"""Compiling the detector model: from an IR file and options to a compiled model and its info.

The steps `OpenVinoDetector` runs once, at construction: core-wide properties (model cache,
CPU threads), reading the IR and reshaping it to the batch size with the pre-processing built
into the graph (u8 BGR NHWC frames in, so no float conversion or transpose in Python),
compiling it for the device with the performance hint, and sizing the infer requests.
A plain AUTO on a host without a GPU or NPU device node is compiled as AUTO:CPU
(`device_to_compile`).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import openvino as ov
from openvino.preprocess import PrePostProcessor

from edge_facedet.inference.model import PerformanceHint

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = [
    "CompileOptions",
    "CompiledDetectorModel",
    "DetectorInfo",
    "bgr_u8_nhwc_input",
    "compile_detector_model",
    "device_to_compile",
    "precision_of",
]


@dataclass(frozen=True, slots=True)
class DetectorInfo:
    """What was compiled, and where: shown by `model info`, published and exported."""

    model_path: str
    model_name: str
    precision: str
    requested_device: str
    execution_devices: tuple[str, ...]
    performance_hint: str
    batch_size: int
    infer_requests: int
    compile_seconds: float


@dataclass(frozen=True, slots=True)
class CompileOptions:
    """How the model is compiled: the detector's constructor keywords, checked and grouped."""

    device: str = "AUTO"
    performance_hint: PerformanceHint = PerformanceHint.THROUGHPUT
    batch_size: int = 1
    infer_requests: int | None = None
    """None: twice OpenVINO's optimal number (see `_default_infer_requests`)."""
    inference_threads: int | None = None
    cache_dir: Path | None = None

    @classmethod
    def parse(
        cls,
        *,
        device: str,
        performance_hint: str,
        batch_size: int,
        infer_requests: int | None,
        inference_threads: int | None,
        cache_dir: Path | None,
    ) -> CompileOptions:
        """The options from the constructor's keywords; ValueError naming a bad one."""
        try:
            hint = PerformanceHint(performance_hint)
        except ValueError:
            hints = tuple(hint.value for hint in PerformanceHint)
            raise ValueError(f"performance_hint must be one of {hints}") from None
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        return cls(
            device=device,
            performance_hint=hint,
            batch_size=batch_size,
            infer_requests=infer_requests,
            inference_threads=inference_threads,
            cache_dir=cache_dir,
        )


@dataclass(frozen=True, slots=True)
class CompiledDetectorModel:
    """The result of `compile_detector_model`: what the detector runs its requests on."""

    compiled: ov.CompiledModel
    input_size: tuple[int, int]
    """(width, height) the frames must have."""
    infer_requests: int
    info: DetectorInfo


def precision_of(model_xml: Path) -> str:
    """The precision of an installed IR: Open Model Zoo's layout names its parent folder so."""
    return model_xml.parent.name


def bgr_u8_nhwc_input(model: ov.Model) -> ov.Model:
    """u8 NHWC BGR in; the conversion to the model's f32 NCHW runs inside the graph."""
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    return ppp.build()


ACCELERATOR_NODES = (("/dev/dri", "renderD*"), ("/dev/accel", "accel*"), ("/dev", "dxg"))
"""Device nodes (folder, pattern) without which OpenVINO's GPU and NPU plugins find no device
on Linux: Intel GPUs' render nodes, NPUs' accel nodes, and WSL2's GPU node."""


def device_to_compile(
    device: str, *, nodes: tuple[tuple[str, str], ...] = ACCELERATOR_NODES
) -> str:
    """`device`, except a plain AUTO on a Linux host with none of `nodes`: AUTO:CPU.

    To choose, AUTO loads every plugin and asks it for devices, and a loaded plugin stays
    mapped with its start-up allocations for the process's life (the GPU and NPU plugins'
    share is measured by benchmarks/memory.py), although without these nodes AUTO can only
    choose the CPU. AUTO:CPU keeps AUTO's behaviour with the one candidate it would have found.
    """
    if device != "AUTO" or not sys.platform.startswith("linux"):
        return device
    if any(next(Path(folder).glob(pattern), None) for folder, pattern in nodes):
        return device
    return "AUTO:CPU"


def _configure_core(core: ov.Core, options: CompileOptions) -> None:
    """Core-wide properties: the model cache and the CPU plugin's thread count."""
    if options.cache_dir is not None:
        options.cache_dir.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(options.cache_dir)})
    if options.inference_threads is not None and "CPU" in core.available_devices:
        core.set_property("CPU", {"INFERENCE_NUM_THREADS": options.inference_threads})


def _read_model(
    core: ov.Core,
    model_xml: Path,
    *,
    batch_size: int,
    preprocessing: Callable[[ov.Model], ov.Model],
) -> tuple[ov.Model, tuple[int, int]]:
    """The model reshaped to `batch_size` with `preprocessing` built in, and its (w, h)."""
    model = core.read_model(model_xml)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"{model_xml}: expected one input and one output")
    _, _, height, width = (int(d) for d in model.input().shape)
    model.reshape({model.input().get_any_name(): [batch_size, 3, height, width]})
    return preprocessing(model), (width, height)


def _default_infer_requests(compiled: ov.CompiledModel) -> int:
    # Twice the optimum (one per stream): a finished request goes round the event loop
    # (callback -> loop -> scheduler -> start_async, through the GIL the camera readers
    # contend for) before it is restarted, and with one request per stream the stream
    # idles meanwhile. A second queued request keeps it busy (docs/benchmarks.md).
    optimal = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    return 2 * max(1, optimal)


def _execution_devices(compiled: ov.CompiledModel, *, requested: str) -> tuple[str, ...]:
    try:
        devices = compiled.get_property("EXECUTION_DEVICES")
    except RuntimeError:  # older plugins do not report it
        return (requested,)
    return tuple(str(d) for d in devices)


def _log_compiled(info: DetectorInfo) -> None:
    log.info(
        "compiled %s (%s) for %s -> %s: batch %d, %d infer requests, %s, %.2f s",
        info.model_name,
        info.precision,
        info.requested_device,
        ",".join(info.execution_devices),
        info.batch_size,
        info.infer_requests,
        info.performance_hint,
        info.compile_seconds,
    )


def compile_detector_model(
    *,
    model_xml: Path,
    options: CompileOptions,
    core: ov.Core,
    preprocessing: Callable[[ov.Model], ov.Model] = bgr_u8_nhwc_input,
) -> CompiledDetectorModel:
    """Read, reshape and compile `model_xml`; blocks for up to seconds."""
    if not model_xml.is_file():
        raise FileNotFoundError(f"model file {model_xml} does not exist")
    started = time.perf_counter()
    _configure_core(core, options)
    model, input_size = _read_model(
        core, model_xml, batch_size=options.batch_size, preprocessing=preprocessing
    )
    hint = options.performance_hint.value
    device = device_to_compile(options.device)
    if device != options.device:
        log.debug("no GPU or NPU device node on this host: compiling for %s", device)
    compiled = core.compile_model(model, device, {"PERFORMANCE_HINT": hint})
    infer_requests = options.infer_requests or _default_infer_requests(compiled)
    info = DetectorInfo(
        model_path=str(model_xml),
        model_name=model_xml.stem,
        precision=precision_of(model_xml),
        requested_device=options.device,
        execution_devices=_execution_devices(compiled, requested=options.device),
        performance_hint=hint,
        batch_size=options.batch_size,
        infer_requests=infer_requests,
        compile_seconds=time.perf_counter() - started,
    )
    _log_compiled(info)
    return CompiledDetectorModel(
        compiled=compiled, input_size=input_size, infer_requests=infer_requests, info=info
    )
