"""The configured detector: where its model is, where OpenVINO caches it, loading it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from edge_facedet.inference.detector import OpenVinoDetector
from edge_facedet.inference.model import default_model_root, model_xml_path

if TYPE_CHECKING:
    from collections.abc import Mapping

    from edge_facedet.config import ServiceConfig
    from edge_facedet.outputs.metrics import Metrics

__all__ = [
    "ModelLoadError",
    "load_detector",
    "model_cache_dir",
    "report_device",
    "resolve_model_xml",
]


class ModelLoadError(Exception):
    """The configured model could not be read or compiled for the configured device."""


def resolve_model_xml(config: ServiceConfig) -> Path:
    model = config.model
    if model.path is not None:
        return model.path
    return model_xml_path(model.dir or default_model_root(), model.precision)


def model_cache_dir(config: ServiceConfig, *, environ: Mapping[str, str]) -> Path | None:
    """Where OpenVINO keeps compiled models: the config's, or under systemd's cache dir."""
    if config.model.cache_dir is not None:
        return config.model.cache_dir
    # systemd's CacheDirectory= sets this; a restart then loads the compiled model.
    cache = environ.get("CACHE_DIRECTORY")
    return Path(cache.split(":")[0]) / "openvino" if cache else None


async def load_detector(config: ServiceConfig, *, cache_dir: Path | None) -> OpenVinoDetector:
    """The configured model compiled for its device, in a worker thread; ModelLoadError."""
    model = config.model
    model_xml = resolve_model_xml(config)
    try:
        return await asyncio.to_thread(
            OpenVinoDetector,
            model_xml=model_xml,
            device=model.device,
            performance_hint=model.performance_hint.value,
            batch_size=model.batch_size,
            infer_requests=model.infer_requests,
            cache_dir=cache_dir,
            inference_threads=model.inference_threads,
        )
    except (RuntimeError, ValueError, OSError) as exc:
        # A model that is not face-detection-0204's shape, or a device that is absent:
        # no restart fixes either, so it is reported as configuration (exit 2).
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"model.path/model.device: cannot load {model_xml} on {model.device}: {first_line}"
        ) from None


def report_device(detector: OpenVinoDetector, *, metrics: Metrics, requested: str) -> str:
    """Publish the device info metric; the devices the model really runs on."""
    devices = ",".join(detector.info.execution_devices)
    metrics.device.info(
        {
            "requested": requested,
            "selected": devices,
            "model": detector.info.model_name,
            "precision": detector.info.precision,
        }
    )
    return devices
