"""What a reload would change: two validated configurations compared, field by field.

Pure: no I/O, nothing revealed. The result says which cameras start, stop or restart (with
the camera fields that changed, `defaults` already merged into each camera), which MQTT
fields changed (the output reconnects with them), and which fields cannot change in a
running process (they apply at the next start). A secret is compared by where it is read
from (file, variable, credential), never by its value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel

from edge_facedet.config.secrets import SecretSource

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edge_facedet.config.camera import CameraConfig
    from edge_facedet.config.service import ServiceConfig

__all__ = ["CameraChange", "ConfigDiff", "changed_fields", "diff_configs", "enabled_cameras"]

# Top-level sections a running service applies: cameras (with their merged defaults) and
# MQTT. Every other field is read once at start (the model is compiled, the HTTP endpoint
# bound, the node id and shard make the topics and the camera assignment).
_LIVE_SECTIONS = frozenset({"cameras", "defaults", "mqtt"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CameraChange:
    """A camera in both files whose settings differ: it restarts."""

    camera_id: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigDiff:
    """The difference between a running configuration and a new one."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[CameraChange, ...] = ()
    mqtt: tuple[str, ...] = ()
    """Changed `mqtt.*` fields: the MQTT output reconnects with the new settings."""
    restart_required: tuple[str, ...] = ()
    """Changed fields that apply at the next start only, by path (`model.batch_size`)."""

    @property
    def empty(self) -> bool:
        return not (
            self.added or self.removed or self.changed or self.mqtt or self.restart_required
        )

    @property
    def cameras_touched(self) -> frozenset[str]:
        return frozenset((*self.added, *self.removed, *(c.camera_id for c in self.changed)))

    def lines(self) -> list[str]:
        """The difference in words, one line per item (what `check-config --against` prints)."""
        if self.empty:
            return ["no change"]
        lines = [f"camera {camera_id}: added (starts)" for camera_id in self.added]
        lines += [f"camera {camera_id}: removed (stops)" for camera_id in self.removed]
        lines += [
            f"camera {change.camera_id}: changed (restarts): {', '.join(change.fields)}"
            for change in self.changed
        ]
        if self.mqtt:
            lines.append(f"mqtt: changed (reconnects): {', '.join(self.mqtt)}")
        lines += [f"{path}: changed (applies at the next start)" for path in self.restart_required]
        return lines


def enabled_cameras(config: ServiceConfig) -> list[CameraConfig]:
    return [camera for camera in config.cameras if camera.enabled]


def diff_configs(
    old: ServiceConfig,
    new: ServiceConfig,
    *,
    cameras: Callable[[ServiceConfig], Sequence[CameraConfig]] = enabled_cameras,
) -> ConfigDiff:
    """What changes from `old` to `new`; `cameras(config)` are the cameras a config runs
    (default: its enabled ones; the service passes its shard's)."""
    before = {camera.id: camera for camera in cameras(old)}
    after = {camera.id: camera for camera in cameras(new)}
    changed = tuple(
        CameraChange(camera_id=camera_id, fields=fields)
        for camera_id, camera in after.items()
        if camera_id in before and (fields := changed_fields(before[camera_id], camera))
    )
    restart: list[str] = []
    for name in type(old).model_fields:
        if name not in _LIVE_SECTIONS:
            restart += changed_fields(getattr(old, name), getattr(new, name), path=name)
    return ConfigDiff(
        added=tuple(camera_id for camera_id in after if camera_id not in before),
        removed=tuple(camera_id for camera_id in before if camera_id not in after),
        changed=changed,
        mqtt=changed_fields(old.mqtt, new.mqtt, path="mqtt"),
        restart_required=tuple(restart),
    )


def changed_fields(old: object, new: object, *, path: str = "") -> tuple[str, ...]:
    """The paths of the leaf fields that differ between two values (models compared field by
    field, anything else by equality); `path` prefixes them."""
    if (
        isinstance(old, BaseModel)
        and isinstance(new, BaseModel)
        and type(old) is type(new)
        # A secret source is one item: naming its inner field (file, env) says nothing more.
        and not isinstance(old, SecretSource)
    ):
        found: list[str] = []
        for name in type(old).model_fields:
            sub = f"{path}.{name}" if path else name
            found += changed_fields(getattr(old, name), getattr(new, name), path=sub)
        return tuple(found)
    return () if old == new else (path or "<value>",)
