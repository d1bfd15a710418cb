"""The detector model as the rest of the package names it: precisions, hints, where files live.

A light module (no OpenVINO import) so that the config, the service and the offline tools
share one spelling of each choice without importing each other: `Precision` is the config's
field type, the `--precision` choices of the CLI and the keys of the asset manifest
(`edge_facedet.tools.assets`); `PerformanceHint` is the config's field type and what the
detector accepts. The models root and the file layout under it (Open Model Zoo's, also used by
`edge-facedet model fetch`) are defined here too, for the service to find the installed IR.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Final

__all__ = [
    "MODEL_NAME",
    "PerformanceHint",
    "Precision",
    "default_model_root",
    "model_relpath",
    "model_xml_path",
    "precision_names",
]

MODEL_NAME: Final = "face-detection-0204"


class _Named(str, enum.Enum):
    """A str enum whose str() is its value (`enum.StrEnum` needs Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)


class Precision(_Named):
    """The model precisions published for MODEL_NAME (one IR folder each).

    In Open Model Zoo's order, which is also the order pydantic lists them in a config error;
    `precision_names()` gives them sorted, as messages and `--help` show them.
    """

    FP32 = "FP32"
    FP16 = "FP16"
    FP16_INT8 = "FP16-INT8"


def precision_names() -> tuple[str, ...]:
    """The precisions' names, sorted: FP16, FP16-INT8, FP32."""
    return tuple(sorted(precision.value for precision in Precision))


class PerformanceHint(_Named):
    """OpenVINO's PERFORMANCE_HINT values the detector accepts."""

    THROUGHPUT = "THROUGHPUT"
    LATENCY = "LATENCY"
    CUMULATIVE_THROUGHPUT = "CUMULATIVE_THROUGHPUT"


def default_model_root() -> Path:
    """$EDGE_FACEDET_MODELS, else $XDG_DATA_HOME/edge-facedet/models, else ~/.local/share/..."""
    explicit = os.environ.get("EDGE_FACEDET_MODELS")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "edge-facedet" / "models"


def model_relpath(precision: Precision, suffix: str) -> str:
    """intel/<MODEL_NAME>/<precision>/<MODEL_NAME>.<suffix>: Open Model Zoo's layout."""
    return f"intel/{MODEL_NAME}/{precision.value}/{MODEL_NAME}.{suffix}"


def model_xml_path(root: Path, precision: Precision) -> Path:
    """The installed .xml of `precision` under a models root."""
    return root / model_relpath(precision, "xml")
