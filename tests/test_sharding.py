"""Camera sharding without the service: the assignment, its properties, the config and the CLI.

The assignment (edge_facedet/sharding.py) must give every camera to exactly one shard, move
about 1/(N+1) of the cameras on a scale from N to N+1 shards, keep each shard's total cost
near the mean, and be the same in every process (no salted `hash()`). Properties are checked
with hypothesis over random camera ids and costs, the statistical ones over many fixed random
sets. The shard itself (config/shard.py) comes from the file, `EDGE_FACEDET_SHARD` over it, and
for `auto` the host name's ordinal, whose absence stops `run` with exit 2.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import statistics
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_facedet.checkconfig import check_config
from edge_facedet.cli import build_parser
from edge_facedet.config import ConfigError, ServiceConfig, Shard, ShardConfig, resolve_shard
from edge_facedet.config.shard import config_for_shard, host_ordinal, parse_shard_spec
from edge_facedet.sharding import (
    LOAD_SLACK,
    CameraLoad,
    assign,
    camera_cost,
    camera_loads,
    owned,
    plan_shard,
    ranking,
    shard_loads,
)
from tests.support.paths import REPO
from tests.support.service import run_cli

if TYPE_CHECKING:
    from pathlib import Path

PLAIN = math.inf  # slack for plain rendezvous hashing (no load bound)
TWELVE = [CameraLoad(f"cam-{i:02d}", 1.0) for i in range(12)]

camera_ids = st.lists(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True),
    min_size=1,
    max_size=60,
    unique=True,
)
costs = st.sampled_from([0.1, 0.55, 1.0, 1.0, 3.0])


def loads_of(ids: list[str], draw_costs: list[float]) -> list[CameraLoad]:
    return [CameraLoad(i, c) for i, c in zip(ids, draw_costs, strict=False)]


def shard_of(table: dict[int, list[str]]) -> dict[str, int]:
    return {camera: shard for shard, cameras in table.items() for camera in cameras}


def random_site(rng: random.Random, size: int) -> list[CameraLoad]:
    """A site's cameras: half 720p main streams, 40 % substreams, 10 % 4K (cost 3)."""
    cameras = []
    for _ in range(size):
        draw = rng.random()
        cost = 1.0 if draw < 0.5 else (0.55 if draw < 0.9 else 3.0)
        cameras.append(CameraLoad(f"cam-{rng.getrandbits(48):012x}", cost))
    return cameras


def moves(cameras: list[CameraLoad], *, count: int, slack: float) -> tuple[int, int]:
    """(cameras moved, of which not to the new shard) on a scale from `count` to count+1."""
    before = shard_of(assign(cameras, count=count, slack=slack))
    after = shard_of(assign(cameras, count=count + 1, slack=slack))
    moved = [c for c in before if before[c] != after[c]]
    return len(moved), sum(1 for c in moved if after[c] != count)


# -- the assignment: properties ----------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(ids=camera_ids, data=st.data(), count=st.integers(1, 12), plain=st.booleans())
def test_every_camera_is_in_exactly_one_shard(
    ids: list[str], data: st.DataObject, count: int, plain: bool
) -> None:
    cameras = loads_of(ids, data.draw(st.lists(costs, min_size=len(ids), max_size=len(ids))))
    table = assign(cameras, count=count, slack=PLAIN if plain else LOAD_SLACK)
    assert sorted(table) == list(range(count))
    placed = [camera for shard in table.values() for camera in shard]
    assert sorted(placed) == sorted(ids)
    for index in range(count):
        assert (
            owned(cameras, index=index, count=count, slack=PLAIN if plain else LOAD_SLACK)
            == (table[index])
        )


@settings(max_examples=150, deadline=None)
@given(ids=camera_ids, count=st.integers(1, 15))
def test_plain_rendezvous_moves_cameras_only_to_the_new_shard(ids: list[str], count: int) -> None:
    cameras = [CameraLoad(i, 1.0) for i in ids]
    _, elsewhere = moves(cameras, count=count, slack=PLAIN)
    assert elsewhere == 0


@settings(max_examples=100, deadline=None)
@given(ids=camera_ids, data=st.data(), count=st.integers(1, 10))
def test_the_assignment_ignores_the_order_of_the_file(
    ids: list[str], data: st.DataObject, count: int
) -> None:
    cameras = loads_of(ids, data.draw(st.lists(costs, min_size=len(ids), max_size=len(ids))))
    shuffled = data.draw(st.permutations(cameras))
    assert shard_of(assign(cameras, count=count)) == shard_of(assign(shuffled, count=count))


@settings(max_examples=100, deadline=None)
@given(ids=camera_ids, data=st.data(), count=st.integers(2, 10))
def test_no_shard_exceeds_the_bound_unless_one_camera_cannot_fit(
    ids: list[str], data: st.DataObject, count: int
) -> None:
    cameras = loads_of(ids, data.draw(st.lists(costs, min_size=len(ids), max_size=len(ids))))
    loads = shard_loads(cameras, assign(cameras, count=count))
    total = math.fsum(c.cost for c in cameras)
    bound = (1 + LOAD_SLACK) * total / count
    # Over the bound only by a camera that had nowhere to go: then it went to the least
    # loaded shard, which held at most the mean of what was placed before it.
    largest = max(c.cost for c in cameras)
    assert max(loads.values()) <= max(bound, total / count + largest) + 1e-9


@pytest.mark.parametrize("count", [4, 5, 6, 7, 8])
def test_scaling_up_moves_about_one_in_n_plus_1_cameras(count: int) -> None:
    # 25 random sites of 500 cameras: the mean share moved is near the minimum, 1/(N+1),
    # for plain rendezvous and within a fifth above it with bounded loads; cameras moving
    # between old shards (the price of the bound) stay a small share.
    rng = random.Random(count)  # noqa: S311 - fixed test sites, not a secret
    sites = [random_site(rng, 500) for _ in range(25)]
    ideal = 1 / (count + 1)
    plain = [moves(site, count=count, slack=PLAIN) for site in sites]
    bounded = [moves(site, count=count, slack=LOAD_SLACK) for site in sites]
    assert all(elsewhere == 0 for _, elsewhere in plain)
    assert statistics.mean(m for m, _ in plain) / 500 == pytest.approx(ideal, rel=0.1)
    mean_moved = statistics.mean(m for m, _ in bounded) / 500
    assert ideal * 0.9 <= mean_moved <= ideal * 1.2
    assert statistics.mean(e for _, e in bounded) / 500 <= 0.02


def simulate(count: int, *, sites: int = 12) -> dict[str, float]:
    rng = random.Random(1000 + count)  # noqa: S311 - fixed test sites
    found: dict[str, list[float]] = {"plain": [], "bounded": [], "moved": [], "elsewhere": []}
    for _ in range(sites):
        site = random_site(rng, 500)
        for name, slack in (("plain", PLAIN), ("bounded", LOAD_SLACK)):
            loads = shard_loads(site, assign(site, count=count, slack=slack)).values()
            found[name].append(max(loads) / (math.fsum(loads) / count))
        moved, elsewhere = moves(site, count=count, slack=LOAD_SLACK)
        found["moved"].append(moved / 500)
        found["elsewhere"].append(elsewhere / 500)
    return {
        "plain_worst": max(found["plain"]),
        "bounded_worst": max(found["bounded"]),
        "plain_mean": statistics.mean(found["plain"]),
        "bounded_mean": statistics.mean(found["bounded"]),
        "moved": statistics.mean(found["moved"]),
        "elsewhere": statistics.mean(found["elsewhere"]),
    }


def test_bounded_loads_balance_cost_where_plain_rendezvous_does_not() -> None:
    # 500 cameras of mixed cost over 4..8 shards: the most loaded shard against the mean.
    print("\nN  plain max/mean (worst)  bounded max/mean (worst)  moved N->N+1  between old")
    for count in range(4, 9):
        r = simulate(count)
        print(
            f"{count}  {r['plain_mean']:.3f} ({r['plain_worst']:.3f})         "
            f"{r['bounded_mean']:.3f} ({r['bounded_worst']:.3f})           "
            f"{r['moved']:.3f} (1/(N+1) {1 / (count + 1):.3f})  {r['elsewhere']:.3f}"
        )
        assert r["bounded_worst"] <= 1 + LOAD_SLACK + 1e-9
        assert r["plain_worst"] > 1 + LOAD_SLACK  # why the bound is there


def test_three_to_four_shards_over_twelve_cameras_moves_at_most_four() -> None:
    three, four = assign(TWELVE, count=3), assign(TWELVE, count=4)
    print("\nshard  3 shards                          4 shards")
    for shard in range(4):
        print(f"{shard}      {', '.join(three.get(shard, [])):32}  {', '.join(four[shard])}")
    moved, elsewhere = moves(TWELVE, count=3, slack=LOAD_SLACK)
    print(f"moved {moved} (to the new shard {moved - elsewhere}); plain rendezvous moves", end=" ")
    print(moves(TWELVE, count=3, slack=PLAIN)[0])
    assert [len(three[s]) for s in range(3)] == [4, 4, 4]
    assert [len(four[s]) for s in range(4)] == [3, 3, 3, 3]
    assert 3 <= moved <= 4


def test_ranking_is_a_permutation_led_by_the_plain_assignment() -> None:
    for camera in TWELVE:
        order = ranking(camera.id, count=5)
        assert sorted(order) == list(range(5))
        assert camera.id in assign(TWELVE, count=5, slack=PLAIN)[order[0]]


_CHILD = """
import json, sys
from edge_facedet.sharding import CameraLoad, assign
cameras = [CameraLoad(f"site-{i}", 0.5 + (i % 3)) for i in range(200)]
print(json.dumps({n: assign(cameras, count=n) for n in (3, 7)}))
"""


def test_every_process_computes_the_same_assignment() -> None:
    # Python's str hash is salted per process: a different PYTHONHASHSEED in each child
    # would change an assignment built on it.
    answers = set()
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", _CHILD],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            check=True,
            timeout=60,
        )
        answers.add(result.stdout)
    assert len(answers) == 1
    table = json.loads(answers.pop())
    cameras = [CameraLoad(f"site-{i}", 0.5 + (i % 3)) for i in range(200)]
    here = {str(n): assign(cameras, count=n) for n in (3, 7)}
    assert table == json.loads(json.dumps(here))


# -- the cost of a camera ---------------------------------------------------------------------


def config_with(cameras: list[dict[str, Any]], **top: Any) -> ServiceConfig:
    return ServiceConfig.model_validate({"node_id": "gate-1", "cameras": cameras, **top})


def test_cost_follows_the_benchmarks_per_camera_capacity() -> None:
    url = "rtsp://192.0.2.1/main"
    config = config_with(
        [
            {"id": "main", "url": url},
            {"id": "sub", "url": url, "detect_url": "rtsp://192.0.2.1/sub"},
            {"id": "slow", "url": url, "detect_fps": 1},
            {"id": "noloop", "url": url, "decoder": "pyav", "skip_loop_filter": True},
            {"id": "keys", "url": url, "decoder": "pyav", "keyframes_only": True},
            {"id": "given", "url": url, "cost": 4},
            {"id": "off", "url": url, "enabled": False},
        ]
    )
    cost = {load.id: load.cost for load in camera_loads(config.cameras)}
    assert "off" not in cost
    assert cost["main"] == pytest.approx(1.0)
    # docs/benchmarks.md: 13 main-stream or 24 substream cameras per node; 14 with pyav +
    # skip_loop_filter.
    assert cost["sub"] == pytest.approx(13 / 24, rel=0.03)
    assert cost["noloop"] == pytest.approx(13 / 14, rel=0.03)
    assert cost["slow"] < cost["main"]
    assert cost["keys"] < cost["sub"]
    assert cost["given"] == 4.0
    assert camera_cost(config.cameras[0]) == cost["main"]


@pytest.mark.parametrize("bad", [0, -1, 101])
def test_cost_must_be_positive_and_bounded(bad: float) -> None:
    with pytest.raises(ValueError, match="cost"):
        config_with([{"id": "a", "url": "rtsp://192.0.2.1/", "cost": bad}])


# -- the shard: file, environment, host name --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/1", (0, 1)), ("2/4", (2, 4)), (" auto / 3 ", ("auto", 3)), ("1023/1024", (1023, 1024))],
)
def test_shard_specs_parse(text: str, expected: tuple[object, int]) -> None:
    assert parse_shard_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3/3", "not below the count"),
        ("1/0", "not within 1..1024"),
        ("1/2000", "not within"),
        ("2", "not I/N"),
        ("-1/3", "not I/N"),
        ("x/3", "not I/N"),
    ],
)
def test_bad_shard_specs_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_shard_spec(text)


def test_the_environment_overrides_the_file() -> None:
    file = ShardConfig(count=2, index=1)
    assert resolve_shard(file, environ={}) == Shard(index=1, count=2)
    assert resolve_shard(file, environ={"EDGE_FACEDET_SHARD": "2/5"}) == Shard(index=2, count=5)
    assert resolve_shard(ShardConfig(), environ={}) == Shard(index=0, count=1)
    with pytest.raises(ConfigError, match="EDGE_FACEDET_SHARD: index 7 is not below the count 5"):
        resolve_shard(file, environ={"EDGE_FACEDET_SHARD": "7/5"})


@pytest.mark.parametrize(
    ("host", "ordinal"),
    [("edge-facedet-3", 3), ("edge-facedet-0", 0), ("web-12", 12), ("edge-facedet", None)],
)
def test_the_ordinal_is_the_host_names_trailing_number(host: str, ordinal: int | None) -> None:
    assert host_ordinal(host) == ordinal


def test_auto_takes_the_pods_ordinal_from_hostname_or_the_environment() -> None:
    auto = ShardConfig(count=4, index="auto")
    assert resolve_shard(auto, environ={}, hostname="edge-facedet-3") == Shard(3, 4)
    assert resolve_shard(auto, environ={"HOSTNAME": "edge-facedet-2"}) == Shard(2, 4)
    env = {"EDGE_FACEDET_SHARD": "auto/8", "HOSTNAME": "edge-facedet-6"}
    assert resolve_shard(ShardConfig(), environ=env) == Shard(6, 8)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("gate", "shard.index: auto: the host name 'gate' does not end in -<number>"),
        ("edge-facedet-4", "shard.index: auto: the host name 'edge-facedet-4' gives index 4"),
    ],
)
def test_auto_without_a_usable_ordinal_fails_clearly(host: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_shard(ShardConfig(count=4, index="auto"), environ={}, hostname=host)


@pytest.mark.parametrize(
    ("shard", "message"),
    [
        ({"count": 3, "index": 3}, "shard.index: must be below count (3)"),
        ({"count": 0}, "shard.count"),
        ({"index": "first"}, "shard.index"),
        ({"node_id_pattern": "{node_id}"}, "must contain {index}"),
        ({"node_id_pattern": "{host}-{index}"}, "unknown field {host}"),
        ({"node_id_pattern": "{index"}, "unbalanced"),
    ],
)
def test_bad_shard_sections_are_reported_at_their_field(
    tmp_path: Path, shard: dict[str, Any], message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"shard": shard, "cameras": [{"id": "a", "url": "rtsp://192.0.2.1/"}]})
    )
    from edge_facedet.config import load_config

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


def test_a_shard_is_its_own_node_with_its_own_client_and_topics() -> None:
    cameras = [{"id": "a", "url": "rtsp://192.0.2.1/"}]
    plain = config_with(cameras)
    assert config_for_shard(plain, shard=Shard(0, 1)) is plain
    sharded = config_for_shard(plain, shard=Shard(2, 3))
    assert (sharded.node_id, sharded.mqtt.client_id, sharded.mqtt.topic_prefix) == (
        "gate-1-2",
        None,
        None,
    )
    explicit = config_with(
        cameras,
        mqtt={"client_id": "cam-box", "topic_prefix": "site/a"},
        shard={"count": 3, "node_id_pattern": "{node_id}-s{index}of{count}"},
    )
    sharded = config_for_shard(explicit, shard=Shard(1, 3))
    assert (sharded.node_id, sharded.mqtt.client_id, sharded.mqtt.topic_prefix) == (
        "gate-1-s1of3",
        "cam-box-1",
        "site/a-1",
    )
    long_name = config_with(cameras, node_id="n" * 63, shard={"count": 12})
    with pytest.raises(ConfigError, match=r"shard\.node_id_pattern: gives"):
        config_for_shard(long_name, shard=Shard(11, 12))


def test_run_with_auto_and_no_ordinal_exits_2_naming_the_field_and_the_host(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "shard": {"count": 3, "index": "auto"},
                "metrics": {"enabled": False},
                "cameras": [{"id": "a", "url": "rtsp://192.0.2.1/"}],
            }
        )
    )
    result = run_cli("run", "--config", path, env={"HOSTNAME": "gatehouse"})
    assert result.returncode == 2, result.stderr
    assert "shard.index: auto: the host name 'gatehouse' does not end in -<number>" in (
        result.stderr
    )


# -- check-config ------------------------------------------------------------------------------


def twelve_camera_file(tmp_path: Path, **shard: Any) -> Path:
    path = tmp_path / "config.yaml"
    cameras = [{"id": c.id, "url": "rtsp://192.0.2.1/live"} for c in TWELVE]
    cameras[0]["cost"] = 2.5
    path.write_text(yaml.safe_dump({"node_id": "gate", "shard": shard, "cameras": cameras}))
    return path


def test_check_config_lists_what_one_shard_runs(tmp_path: Path) -> None:
    path = twelve_camera_file(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert check_config(path, out=out, err=err, shard=Shard(1, 3)) == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    cameras = [load if load.id != "cam-00" else CameraLoad("cam-00", 2.5) for load in TWELVE]
    plan = plan_shard(cameras, index=1, count=3)
    own = next(line for line in lines if line.startswith("  shard 1 "))
    assert own.startswith(f"  shard 1 (node gate-1): {len(plan.cameras)} cameras, cost ")
    assert own.endswith(", ".join(f"{c} ({2.5 if c == 'cam-00' else 1:.2f})" for c in plan.cameras))
    others = [line for line in lines if line.startswith(("  shard 0 ", "  shard 2 "))]
    assert len(others) == 2 and all(":" not in line.split("cost")[1] for line in others)
    assert any(line.startswith("shards: 3, cost 13.50 in all") for line in lines)


def test_check_config_prints_the_whole_table_for_a_sharded_file(tmp_path: Path) -> None:
    path = twelve_camera_file(tmp_path, count=4)
    result = run_cli("check-config", path)
    assert result.returncode == 0, result.stderr
    table = assign([CameraLoad(c.id, 2.5 if c.id == "cam-00" else 1.0) for c in TWELVE], count=4)
    for shard, cameras in table.items():
        line = next(x for x in result.stdout.splitlines() if x.startswith(f"  shard {shard} "))
        assert [part.split(" (")[0] for part in line.rsplit(": ", 1)[1].split(", ")] == cameras
    # Not sharded: no table at all.
    out = io.StringIO()
    assert check_config(twelve_camera_file(tmp_path), out=out, err=io.StringIO()) == 0
    assert "shard" not in out.getvalue()


def test_check_config_refuses_a_shard_outside_the_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["check-config", "config.yaml", "--shard", "4/4"])
    assert exit_info.value.code == 2
    assert "--shard: index 4 is not below the count 4" in capsys.readouterr().err
