"""What every config model shares: the strict base model, id and text rules, relative paths.

Every settings model derives from `StrictModel`: unknown keys are errors, so a typo is
reported instead of silently ignored, and a validated config is immutable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from pydantic import ValidationInfo

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class StrictModel(BaseModel):
    """A settings model: unknown keys refused, frozen, surrounding whitespace stripped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Make a relative path absolute against the config file's directory (context base_dir)."""
    if value is None:
        return None
    if CONTROL_CHARS.search(str(value)):
        raise ValueError("path contains control characters")
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if isinstance(base, Path) and not value.is_absolute():
        return base / value
    return value


def check_host(host: str, *, what: str) -> str:
    """A host name or address as given (`what` names the field): no URL, no whitespace."""
    if "://" in host or "/" in host:
        raise ValueError(f"{what} is a host name or address, not a URL")
    if re.search(r"\s", host) or CONTROL_CHARS.search(host):
        raise ValueError(f"{what} cannot contain whitespace or control characters")
    return host
