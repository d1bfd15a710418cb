"""Pydantic's validation errors worded for the operator: one line per problem.

Each line names the file and the field path (with the camera's id for camera fields) and is
built from pydantic's `loc` and `msg` only, never from its `input`: that may be a secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_facedet.config.errors import ConfigError, short
from edge_facedet.config.secrets import SecretSource

if TYPE_CHECKING:
    from pathlib import Path

    from pydantic import ValidationError


def _camera_label(data: Any, index: int) -> str:
    label = f"cameras[{index}]"
    if isinstance(data, dict):
        cameras = data.get("cameras")
        if isinstance(cameras, list) and index < len(cameras) and isinstance(cameras[index], dict):
            camera_id = cameras[index].get("id")
            if isinstance(camera_id, str) and camera_id:
                label += f" (id {short(camera_id, limit=40)})"
    return label


_SECRET_FIELDS = frozenset({"password"})


def _format_loc(loc: tuple[int | str, ...], data: Any) -> str:
    parts: list[str] = []
    after_secret = False
    for position, item in enumerate(loc):
        if isinstance(item, int):
            if position == 1 and loc[0] == "cameras":
                parts[-1] = _camera_label(data, item)
            else:
                parts[-1] += f"[{item}]"
            continue
        if after_secret and item not in SecretSource.model_fields:
            # An unknown key under a secret may be the secret itself (`password: {hunter2}`).
            parts.append("<unknown key>")
            continue
        after_secret = item in _SECRET_FIELDS
        parts.append(str(item))
    return ".".join(parts) if parts else "(top level)"


def format_validation_error(path: Path, exc: ValidationError, data: Any) -> ConfigError:
    """One `<file>: <field path>: <problem>` line per error; `data` gives the camera ids."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=True):
        loc = tuple(error["loc"])
        ctx = error.get("ctx") or {}
        field = ctx.get("field") if error["type"] == "config" else None
        if isinstance(field, str):
            loc = (*loc, field)
        message = str(error["msg"])
        if error["type"] == "string_pattern_mismatch" and loc and loc[-1] in ("id", "node_id"):
            message = "must be 1-64 letters, digits, _ or -, starting with a letter or digit"
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        problems.append(f"{path}: {_format_loc(loc, data)}: {message}")
    return ConfigError(problems)
