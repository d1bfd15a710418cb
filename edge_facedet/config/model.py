"""The detector's settings (`model:`): model files, OpenVINO device, batching.

The precision and performance-hint choices are the ones `edge_facedet.inference.model`
defines for the whole package.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from edge_facedet.config.base import StrictModel, resolve_path
from edge_facedet.inference.model import PerformanceHint, Precision, precision_names

# OpenVINO device names: physical devices, optionally numbered (GPU.1), and the virtual ones
# that take a device list (AUTO:GPU,CPU; AUTO:-CPU excludes; BATCH:GPU(4) sets the batch).
_PHYSICAL_DEVICES = frozenset({"CPU", "GPU", "NPU"})
_VIRTUAL_DEVICES = frozenset({"AUTO", "MULTI", "HETERO", "BATCH"})
_DEVICE_ITEM = re.compile(
    r"^(?P<exclude>-)?(?P<name>[A-Z]+)(\.[0-9]{1,2})?(?P<batch>\([0-9]{1,3}\))?$"
)


def _check_device(device: str) -> str:
    """Validate an OpenVINO device string; the message names the part that is wrong."""
    head, sep, tail = device.partition(":")
    if not _DEVICE_ITEM.match(head) or head.startswith("-") or "(" in head:
        raise ValueError(
            "device must be CPU, GPU, GPU.<n>, NPU, or AUTO/MULTI/HETERO/BATCH optionally "
            "followed by :<device list>"
        )
    name = head.split(".", 1)[0]
    if name not in _PHYSICAL_DEVICES | _VIRTUAL_DEVICES:
        raise ValueError(
            f"unknown device {name!r}; known: "
            + ", ".join(sorted(_PHYSICAL_DEVICES | _VIRTUAL_DEVICES))
        )
    if not sep:
        return device
    if name not in _VIRTUAL_DEVICES or name != head:
        raise ValueError(f"only AUTO, MULTI, HETERO and BATCH take a device list, not {head}")
    items = tail.split(",")
    for item in items:
        match = _DEVICE_ITEM.match(item)
        if match is None or match["name"] not in _PHYSICAL_DEVICES:
            raise ValueError(
                f"{name} device list must name CPU, GPU, GPU.<n> or NPU, comma-separated"
            )
        if match["exclude"] and name != "AUTO":
            raise ValueError("only AUTO accepts excluded devices (-CPU)")
        if match["batch"] and name != "BATCH":
            raise ValueError("only BATCH accepts a batch size (GPU(4))")
    return device


class ModelConfig(StrictModel):
    """The detector: which model files, which device, how requests are batched."""

    precision: Precision = Field(
        default=Precision.FP16_INT8,
        description=f"Model precision, one of {', '.join(precision_names())}.",
    )
    path: Path | None = Field(
        default=None,
        description="Explicit path to the model .xml; overrides `dir` and `precision`. "
        "Relative to the config file's directory.",
    )
    dir: Path | None = Field(
        default=None,
        description="Models root as laid out by `edge-facedet model fetch --dest`; "
        "default $EDGE_FACEDET_MODELS or ~/.local/share/edge-facedet/models. "
        "Relative to the config file's directory.",
    )
    device: str = Field(
        default="AUTO",
        min_length=1,
        max_length=100,
        description="OpenVINO device: AUTO, CPU, GPU, GPU.1, NPU, AUTO:GPU,CPU, AUTO:-CPU, ...",
    )
    performance_hint: PerformanceHint = Field(
        default=PerformanceHint.THROUGHPUT, description="OpenVINO performance hint."
    )
    batch_size: int = Field(
        default=1, ge=1, le=32, description="Frames per inference request (model reshape)."
    )
    infer_requests: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Infer requests in flight; default: twice the device's optimal number.",
    )
    batch_wait_ms: float = Field(
        default=5.0,
        ge=0.0,
        le=200.0,
        description="How long the scheduler waits to fill a batch before sending a partial one.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="OpenVINO model cache, so a restart does not recompile. Default: none. "
        "Relative to the config file's directory.",
    )
    inference_threads: int | None = Field(
        default=None, ge=1, le=256, description="CPU inference threads; default: OpenVINO's."
    )

    @field_validator("path", "dir", "cache_dir")
    @classmethod
    def _paths(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return resolve_path(value, info)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return _check_device(value)
