"""Fixtures shared by every test module; area-specific ones live in tests/support/."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from edge_facedet.telemetry import disable_openvino_telemetry
from tests.support.paths import MODEL_MIRROR, MODEL_ROOT

# Test modules import OpenVINO directly: without this its telemetry counts and reports every
# test run from the developer's or CI's home directory (edge_facedet/telemetry.py).
disable_openvino_telemetry()

if TYPE_CHECKING:
    from pathlib import Path

pytest_plugins = [
    "tests.support.alone",
    "tests.support.broker",
    "tests.support.rtsp",
    "tests.support.service",
]


@pytest.fixture(scope="session")
def model_root() -> Path:
    """The model tree, installed from the shared mirror (with checksums) if it is missing."""
    from edge_facedet.tools.assets import AssetError, fetch_model, verify_model

    for precision in ("FP16", "FP16-INT8"):
        try:
            verify_model(root=MODEL_ROOT, precision=precision)
        except AssetError:
            fetch_model(precision=precision, dest=MODEL_ROOT, mirror=MODEL_MIRROR)
    return MODEL_ROOT


@pytest.fixture(scope="session")
def model_xml(model_root: Path) -> Path:
    from edge_facedet.tools.assets import model_xml_path

    return model_xml_path(model_root, "FP16-INT8")
