"""The fault that ends one capture session of a camera reader."""

from __future__ import annotations


class CameraFaultError(Exception):
    """A camera fault with a one-line message already redacted; the reader backs off and
    reconnects."""
