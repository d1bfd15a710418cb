"""Compiling the detector model: `CompileOptions` checks, and what `compile_detector_model`
builds and reports (the u8 NHWC input, the batch, the infer requests) on the real model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openvino as ov
import pytest

from edge_facedet.inference.compilation import CompileOptions, compile_detector_model
from edge_facedet.inference.detector import OpenVinoDetector
from edge_facedet.inference.model import PerformanceHint


def test_compile_options_parse_checks_the_hint_and_the_batch() -> None:
    options = CompileOptions.parse(
        device="CPU",
        performance_hint="LATENCY",
        batch_size=2,
        infer_requests=None,
        inference_threads=None,
        cache_dir=None,
    )
    assert options.performance_hint is PerformanceHint.LATENCY
    assert (options.device, options.batch_size) == ("CPU", 2)
    keywords: dict[str, Any] = {
        "device": "CPU",
        "infer_requests": None,
        "inference_threads": None,
        "cache_dir": None,
    }
    with pytest.raises(ValueError, match="performance_hint must be one of"):
        CompileOptions.parse(performance_hint="FAST", batch_size=1, **keywords)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        CompileOptions.parse(performance_hint="THROUGHPUT", batch_size=0, **keywords)


def test_bad_options_are_refused_before_the_model_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "FP16" / "absent.xml"
    with pytest.raises(ValueError, match="performance_hint"):
        OpenVinoDetector(model_xml=missing, performance_hint="FAST")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OpenVinoDetector(model_xml=missing)


def test_compile_detector_model_describes_what_it_compiled(model_xml: Path) -> None:
    options = CompileOptions(device="CPU", batch_size=2, infer_requests=3)
    model = compile_detector_model(model_xml=model_xml, options=options, core=ov.Core())
    assert model.input_size == (448, 448)
    assert model.infer_requests == 3
    info = model.info
    assert (info.model_name, info.precision) == ("face-detection-0204", "FP16-INT8")
    assert (info.requested_device, info.execution_devices) == ("CPU", ("CPU",))
    assert (info.performance_hint, info.batch_size, info.infer_requests) == ("THROUGHPUT", 2, 3)
    assert info.compile_seconds > 0
    # The u8 NHWC input with the batch reshaped in, as `detect` hands frames over.
    port = model.compiled.input()
    assert port.element_type == ov.Type.u8
    assert list(port.shape) == [2, 448, 448, 3]
    # Without an explicit count: twice OpenVINO's optimal number of requests.
    default = compile_detector_model(
        model_xml=model_xml, options=CompileOptions(device="CPU"), core=ov.Core()
    )
    optimal = int(default.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    assert default.infer_requests == 2 * max(1, optimal)
