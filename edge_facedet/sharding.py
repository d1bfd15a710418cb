"""Which shard runs which camera: rendezvous hashing with bounded, cost-weighted loads.

Every replica computes the same assignment from the same file, without talking to the
others, so the functions here are pure and depend on nothing but the camera ids, their
costs and the shard count: no Python `hash()` (salted per process), no file order.

**Rendezvous (highest random weight) hashing** (Thaler and Ravishankar, 1998): each camera
ranks the shards by a hash of (camera id, shard index) and goes to the first. Going from N to
N+1 shards, a camera moves only if the new shard ranks first for it, which happens for about
1/(N+1) of them, and then only to the new shard.

**Weights.** Schindelhauer and Schomaker's weighted rendezvous scores a shard
`-w / ln(h)`, with `h` the hash mapped to (0, 1) and `w` the weight of the *shard*. Cameras,
not shards, differ in cost here (a 4K main stream is many substreams); a weight per camera
scales every shard's score for that camera alike, so it cannot change which shard ranks
first. The ranking below is therefore by `h` alone (the same order as the weighted score),
and the cost enters where it matters, in each shard's total:

**Bounded loads** ("consistent hashing with bounded loads", Mirrokni, Thorup and Zadimoghaddam,
SODA 2018): no shard may take more than `(1 + slack)` times the mean cost. Cameras are placed
one by one in a fixed order (by a hash of their id, so not the file's order), each on the
first shard in its own ranking that still has room; if none has, on the least loaded one.
Plain rendezvous leaves cost imbalanced by chance (a few costly cameras hashed together);
the bound caps it, at the price of some cameras moving between old shards on a scale change
(the figures are in the README's Sharding section). `slack=math.inf` is plain rendezvous.

**Cost** (`camera_cost`): a camera's `cost:` if the config gives one, else an estimate in
units of a 720p main-stream camera at detect_fps 5 (the bench's reference camera): a
decoding part that runs at the camera's frame rate whatever is detected, plus a detection
part proportional to detect_fps. The constants come from docs/benchmarks.md's capacity and
decoder tables; README, Sharding, shows the arithmetic.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from edge_facedet.config import CameraConfig

__all__ = [
    "LOAD_SLACK",
    "CameraLoad",
    "ShardPlan",
    "assign",
    "camera_cost",
    "camera_loads",
    "owned",
    "plan_shard",
    "ranking",
    "shard_loads",
]

# A shard's total cost may exceed the mean by this share before cameras spill over to
# their next-ranked shard. Smaller balances better and moves more cameras on a scale change.
LOAD_SLACK: Final = 0.1

# The cost model, in reference cameras (720p main stream, 25 frames/s, detect_fps 5 = 1.0).
# Decoding every frame of the main stream, and of a 640x360 substream (`detect_url`):
DECODE_MAIN: Final = 0.6
DECODE_SUBSTREAM: Final = 0.15
# Inference and the event loop per camera at the reference detect_fps (input size is the
# network's whatever the stream's resolution, so the same for main and substream):
DETECT_AT_REFERENCE: Final = 0.4
REFERENCE_DETECT_FPS: Final = 5.0
# Decoding shares left by the PyAV options (deblocking skipped; keyframes only):
SKIP_LOOP_FILTER_FACTOR: Final = 0.85
KEYFRAMES_ONLY_FACTOR: Final = 0.1

_DIGEST_BYTES: Final = 8
_HASH_RANGE: Final = float(1 << (8 * _DIGEST_BYTES))
# Keeps the placement order's hash apart from every shard's ranking hash.
_ORDER_KEY: Final = b"order"


@dataclass(frozen=True, slots=True)
class CameraLoad:
    """A camera as the assignment sees it: its id and its estimated cost (> 0)."""

    id: str
    cost: float


def camera_cost(camera: CameraConfig) -> float:
    """The camera's `cost:`, else the estimate from what the config says (module docstring)."""
    if camera.cost is not None:
        return camera.cost
    decode = DECODE_SUBSTREAM if camera.detect_url else DECODE_MAIN
    if camera.keyframes_only:
        decode *= KEYFRAMES_ONLY_FACTOR
    elif camera.skip_loop_filter:
        decode *= SKIP_LOOP_FILTER_FACTOR
    return decode + DETECT_AT_REFERENCE * camera.detect_fps / REFERENCE_DETECT_FPS


def camera_loads(cameras: Iterable[CameraConfig]) -> list[CameraLoad]:
    """The enabled cameras with their costs: what is assigned (disabled ones cost nothing)."""
    return [CameraLoad(camera.id, camera_cost(camera)) for camera in cameras if camera.enabled]


def _unit_hash(camera_id: str, salt: bytes) -> float:
    """A stable hash of (camera id, salt) in (0, 1), the same in every process and version."""
    digest = hashlib.blake2b(
        camera_id.encode(), digest_size=_DIGEST_BYTES, salt=salt[:16].ljust(16, b"\0")
    ).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _HASH_RANGE


def ranking(camera_id: str, *, count: int) -> list[int]:
    """The shards in the camera's order of preference (rendezvous: highest hash first)."""
    scores = [(_unit_hash(camera_id, str(shard).encode()), shard) for shard in range(count)]
    return [shard for _, shard in sorted(scores, reverse=True)]


def _placement_order(cameras: Sequence[CameraLoad]) -> list[CameraLoad]:
    return sorted(cameras, key=lambda camera: (_unit_hash(camera.id, _ORDER_KEY), camera.id))


def assign(
    cameras: Sequence[CameraLoad], *, count: int, slack: float = LOAD_SLACK
) -> dict[int, list[str]]:
    """Every shard index (0..count-1) -> its camera ids, in the given cameras' order.

    Each camera is in exactly one shard. `slack` bounds a shard's cost to `(1 + slack)`
    times the mean; `math.inf` gives plain rendezvous hashing.
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    capacity = (1.0 + slack) * sum(camera.cost for camera in cameras) / count
    loads = [0.0] * count
    shard_of: dict[str, int] = {}
    for camera in _placement_order(cameras):
        preferred = ranking(camera.id, count=count)
        shard = next(
            (s for s in preferred if loads[s] + camera.cost <= capacity),
            # Nowhere with room (a camera costlier than the slack): the least loaded,
            # ties to the camera's own preference.
            min(preferred, key=lambda s: loads[s]),
        )
        shard_of[camera.id] = shard
        loads[shard] += camera.cost
    table: dict[int, list[str]] = {shard: [] for shard in range(count)}
    for camera in cameras:
        table[shard_of[camera.id]].append(camera.id)
    return table


def owned(
    cameras: Sequence[CameraLoad], *, index: int, count: int, slack: float = LOAD_SLACK
) -> list[str]:
    """The camera ids shard `index` of `count` runs."""
    return assign(cameras, count=count, slack=slack)[index]


def shard_loads(cameras: Sequence[CameraLoad], table: dict[int, list[str]]) -> dict[int, float]:
    """Each shard's total cost under the assignment `table`."""
    cost = {camera.id: camera.cost for camera in cameras}
    return {shard: math.fsum(cost[c] for c in ids) for shard, ids in table.items()}


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """What one shard runs, with every shard's total cost so imbalance shows."""

    index: int
    count: int
    cameras: tuple[str, ...]
    cost: float
    loads: tuple[float, ...]

    def payload(self) -> bytes:
        """The retained `<prefix>/shard` message (JSON)."""
        return json.dumps(
            {
                "index": self.index,
                "count": self.count,
                "cameras": list(self.cameras),
                "cost": round(self.cost, 3),
                "loads": [round(load, 3) for load in self.loads],
            },
            separators=(",", ":"),
        ).encode()

    def summary(self) -> str:
        """One log line: the shard, its load against the others, its cameras."""
        loads = " / ".join(f"{load:.2f}" for load in self.loads)
        cameras = ", ".join(self.cameras) or "none"
        return (
            f"shard {self.index} of {self.count}: {len(self.cameras)} cameras, cost "
            f"{self.cost:.2f} (every shard: {loads}): {cameras}"
        )


def plan_shard(cameras: Sequence[CameraLoad], *, index: int, count: int) -> ShardPlan:
    """Shard `index` of `count`'s cameras and cost, and every shard's cost."""
    table = assign(cameras, count=count)
    loads = shard_loads(cameras, table)
    return ShardPlan(
        index=index,
        count=count,
        cameras=tuple(table[index]),
        cost=loads[index],
        loads=tuple(loads[shard] for shard in range(count)),
    )
