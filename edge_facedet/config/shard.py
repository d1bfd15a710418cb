"""`shard:`: which share of the cameras this process runs, when N replicas share one config.

A site with more cameras than one box decodes runs N replicas of one configuration (a
Kubernetes StatefulSet, N systemd units); each takes the cameras `edge_facedet.sharding`
assigns to its index, computed from the file alone, so the replicas never talk to each other.

Where the shard comes from, first match wins:

1. `EDGE_FACEDET_SHARD=I/N` (or `auto/N`) in the environment: how a StatefulSet sets it
   without a file per pod; it replaces both `shard.index` and `shard.count`;
2. `shard: {count: N, index: I | auto}` in the file;
3. neither: one shard (count 1), which changes nothing.

`index: auto` takes the ordinal a StatefulSet gives its pods (`edge-facedet-3` -> 3): the
trailing `-<digits>` of `$HOSTNAME`, else of `socket.gethostname()`. No ordinal, or one that
is not below the count, is a configuration error naming `shard.index` and the host name.

A shard is its own MQTT node: its node id is `node_id_pattern` filled in (by default
`<node_id>-<index>`), so its status, Last Will and camera states never collide with another
shard's. An explicit `mqtt.client_id` or `mqtt.topic_prefix` gets `-<index>` appended for the
same reason: two clients with one id disconnect each other forever, and two shards on one
status topic overwrite each other's Last Will.
"""

from __future__ import annotations

import re
import socket
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Final, Literal

from pydantic import Field, field_validator, model_validator

from edge_facedet.config.base import ID_PATTERN, StrictModel
from edge_facedet.config.errors import ConfigError, field_error

if TYPE_CHECKING:
    from collections.abc import Mapping

    from edge_facedet.config.service import ServiceConfig

__all__ = [
    "AUTO",
    "MAX_SHARDS",
    "SHARD_ENV",
    "Shard",
    "ShardConfig",
    "config_for_shard",
    "host_ordinal",
    "parse_shard_spec",
    "resolve_shard",
    "shard_node_id",
    "shard_settings",
]

SHARD_ENV: Final = "EDGE_FACEDET_SHARD"
AUTO: Final = "auto"
# More replicas than this would each hold a camera or none (`cameras` is at most 256).
MAX_SHARDS: Final = 1024
_PATTERN_FIELDS: Final = frozenset({"node_id", "index", "count"})
_SPEC = re.compile(r"^\s*(?P<index>auto|\d{1,4})\s*/\s*(?P<count>\d{1,4})\s*$")
_ORDINAL = re.compile(r"-(?P<ordinal>\d{1,9})$")

ShardIndex = Annotated[int, Field(ge=0)] | Literal["auto"]


class ShardConfig(StrictModel):
    """This replica's share of the cameras; see the module docstring."""

    count: int = Field(
        default=1,
        ge=1,
        le=MAX_SHARDS,
        description="Replicas sharing this configuration; 1 runs every camera (no sharding).",
    )
    index: ShardIndex = Field(
        default=0,
        description="This replica's index, 0 to count - 1, or `auto`: the trailing -<number> "
        "of the host name (a StatefulSet pod's ordinal).",
    )
    node_id_pattern: str = Field(
        default="{node_id}-{index}",
        min_length=1,
        max_length=128,
        description="A shard's MQTT node id and metrics node: {node_id}, {index} and {count} "
        "filled in; must hold {index}, so shards never share a status topic.",
    )

    @field_validator("node_id_pattern")
    @classmethod
    def _pattern(cls, pattern: str) -> str:
        try:
            fields = {
                name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None
            }
        except ValueError:
            raise ValueError("unbalanced { or } (write {node_id}, {index} or {count})") from None
        unknown = fields - _PATTERN_FIELDS
        if unknown:
            raise ValueError(f"unknown field {{{sorted(unknown)[0]}}}; use node_id, index, count")
        if "index" not in fields:
            raise ValueError("must contain {index}: shards need node ids of their own")
        return pattern

    @model_validator(mode="after")
    def _index_below_count(self) -> ShardConfig:
        if isinstance(self.index, int) and self.index >= self.count:
            raise field_error("index", f"must be below count ({self.count}): 0..{self.count - 1}")
        return self


@dataclass(frozen=True, slots=True)
class Shard:
    """A resolved shard: this process runs the cameras assigned to `index` of `count`."""

    index: int = 0
    count: int = 1

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard_spec(text: str) -> tuple[int | Literal["auto"], int]:
    """`I/N` or `auto/N` as (index, count); ValueError worded for the operator."""
    match = _SPEC.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not I/N or auto/N (e.g. 2/4)")
    count = int(match["count"])
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"count {count} is not within 1..{MAX_SHARDS}")
    if match["index"] == AUTO:
        return AUTO, count
    index = int(match["index"])
    if index >= count:
        raise ValueError(f"index {index} is not below the count {count}")
    return index, count


def shard_settings(file: ShardConfig, *, environ: Mapping[str, str]) -> ShardConfig:
    """The file's `shard:` with `EDGE_FACEDET_SHARD` applied over it (ConfigError if bad)."""
    spec = environ.get(SHARD_ENV, "").strip()
    if not spec:
        return file
    try:
        index, count = parse_shard_spec(spec)
    except ValueError as exc:
        raise ConfigError(f"{SHARD_ENV}: {exc}") from None
    return file.model_copy(update={"index": index, "count": count})


def host_ordinal(hostname: str) -> int | None:
    """The StatefulSet ordinal at the end of `hostname` (`edge-facedet-3` -> 3), or None."""
    match = _ORDINAL.search(hostname.strip())
    return int(match["ordinal"]) if match else None


def _host_name(environ: Mapping[str, str]) -> str:
    # Kubernetes sets both to the pod's name; $HOSTNAME first lets an operator (or a test)
    # name the ordinal without changing the machine's name.
    return environ.get("HOSTNAME", "").strip() or socket.gethostname()


def resolve_shard(
    settings: ShardConfig, *, environ: Mapping[str, str], hostname: str | None = None
) -> Shard:
    """This process's shard from the file's settings and the environment; ConfigError if none.

    `hostname` replaces `$HOSTNAME` and `socket.gethostname()` (tests).
    """
    effective = shard_settings(settings, environ=environ)
    source = SHARD_ENV if environ.get(SHARD_ENV, "").strip() else "shard.index"
    if effective.index != AUTO:
        return Shard(index=int(effective.index), count=effective.count)
    host = hostname if hostname is not None else _host_name(environ)
    ordinal = host_ordinal(host)
    if ordinal is None:
        raise ConfigError(
            f"{source}: auto: the host name {host!r} does not end in -<number> (a StatefulSet "
            "pod's ordinal, e.g. edge-facedet-3); set shard.index or EDGE_FACEDET_SHARD=I/N"
        )
    if ordinal >= effective.count:
        raise ConfigError(
            f"{source}: auto: the host name {host!r} gives index {ordinal}, not below the "
            f"shard count {effective.count} (more replicas than shards?)"
        )
    return Shard(index=ordinal, count=effective.count)


def shard_node_id(*, node_id: str, shard: Shard, pattern: str) -> str:
    """The shard's node id: `pattern` filled in; the node id itself when not sharded."""
    if not shard.sharded:
        return node_id
    name = pattern.format(node_id=node_id, index=shard.index, count=shard.count)
    if re.fullmatch(ID_PATTERN, name) is None:
        raise ConfigError(
            f"shard.node_id_pattern: gives {name!r} for shard {shard}, not a node id "
            "(1-64 letters, digits, _ or -, starting with a letter or digit)"
        )
    return name


def config_for_shard(config: ServiceConfig, *, shard: Shard) -> ServiceConfig:
    """`config` as shard `shard` runs it: its own node id, client id and topic prefix.

    The cameras are not filtered here: the assignment needs all of them (sharding.py).
    """
    if not shard.sharded:
        return config
    node_id = shard_node_id(
        node_id=config.node_id, shard=shard, pattern=config.shard.node_id_pattern
    )
    mqtt = config.mqtt
    suffix = f"-{shard.index}"
    updates: dict[str, str] = {}
    if mqtt.client_id is not None:
        updates["client_id"] = mqtt.client_id + suffix
    if mqtt.topic_prefix is not None:
        updates["topic_prefix"] = mqtt.topic_prefix + suffix
    return config.model_copy(update={"node_id": node_id, "mqtt": mqtt.model_copy(update=updates)})
