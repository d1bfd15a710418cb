"""The offline commands' arguments: bounded numbers, device names, one-line usage errors.

A bad value is refused where it is parsed, with one line naming the argument and exit 2,
instead of a traceback from OpenVINO or a loop that never ends. Nothing here imports OpenCV
or OpenVINO: `pixel_cap` must run before OpenCV is loaded.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from edge_facedet.tools.imageheader import DEFAULT_MAX_PIXELS, pixel_cap_environment

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_EVERY_NTH",
    "MAX_FACE_PX",
    "UsageParser",
    "add_pixel_cap",
    "device_name",
    "float_in",
    "int_in",
    "pixel_cap",
]

EXIT_USAGE = 2
MAX_BATCH_SIZE = 32  # as the config's model.batch_size
MAX_EVERY_NTH = 1_000_000
MAX_FACE_PX = 100_000
DEFAULT_MAX_MEGAPIXELS = DEFAULT_MAX_PIXELS / 1e6
MAX_MEGAPIXELS = 1000.0  # OpenCV's own ceiling is 2**30 pixels


class UsageParser(argparse.ArgumentParser):
    """argparse with a usage error in one line naming the argument, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {value}")
        return value

    return parse


def float_in(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be {low:g}..{high:g}, got {text[:40]!r}")
        return value

    return parse


def device_name(text: str) -> str:
    # The config's rule for model.device, so both accept the same strings.
    from edge_facedet.config.model import _check_device  # noqa: PLC0415 - pydantic loads slowly

    try:
        return _check_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_pixel_cap(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-megapixels",
        type=float_in(0.01, MAX_MEGAPIXELS),
        default=DEFAULT_MAX_MEGAPIXELS,
        help="skip images whose header declares more pixels, undecoded "
        f"(default {DEFAULT_MAX_MEGAPIXELS:g})",
    )


def pixel_cap(megapixels: float) -> int:
    """`--max-megapixels` in pixels, also made OpenCV's own cap for the formats whose header
    the tools do not read. OpenCV reads it once, as it loads: call this before `import cv2`."""
    max_pixels = round(megapixels * 1e6)
    if "cv2" not in sys.modules:
        os.environ.update(pixel_cap_environment(max_pixels))
    return max_pixels
