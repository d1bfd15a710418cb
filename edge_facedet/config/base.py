"""What every config model shares: the strict base model, id and text rules, relative paths.

Every settings model derives from `StrictModel`: unknown keys are errors, so a typo is
reported instead of silently ignored, and a validated config is immutable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from pydantic import ValidationInfo

# Node and camera ids: they are MQTT topic levels and metric labels.
MAX_ID_LENGTH: Final = 64
ID_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_ID_LENGTH - 1}}}$"
# Lower bounds of the float settings: a value that passes must work, not only be > 0
# (1e-320 frames per second is a period of infinity; 1e-9 s reconnect delays spin a core).
MIN_RATE_HZ: Final = 0.01
MIN_TIMEOUT_S: Final = 0.1
MIN_DELAY_S: Final = 0.01
# C0, DEL and C1 (U+0080..U+009F): the MQTT spec forbids them in strings and Mosquitto drops a
# CONNECT whose will topic holds one; in a path, URL or name they only ever hide something.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What else an MQTT broker refuses in a UTF-8 string (MQTT 3.1.1 section 1.5.3, Mosquitto's
# check): surrogates (not encodable) and the Unicode non-characters.
_NOT_MQTT_TEXT = re.compile(r"[\ud800-\udfff\ufdd0-\ufdef]")


class StrictModel(BaseModel):
    """A settings model: unknown keys refused, frozen, surrounding whitespace stripped.

    Numbers must be finite: NaN passes every comparison check (`gt`, `le`) and infinity
    turns into an overflow wherever a rate becomes a period or a count.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False
    )


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


def mqtt_text_problem(value: str) -> str | None:
    """Why `value` cannot be sent as an MQTT string (topic, user name), or None."""
    if CONTROL_CHARS.search(value):
        return "control characters"
    if _NOT_MQTT_TEXT.search(value) or any(ord(c) & 0xFFFE == 0xFFFE for c in value):
        return "surrogates or Unicode non-characters"
    return None


def yaml_off(value: object) -> object:
    """ "off" for YAML 1.1's `off` (which PyYAML reads as False) in an enum field that has an
    `off` member; anything else unchanged."""
    return "off" if value is False else value
