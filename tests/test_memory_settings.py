"""Memory settings: glibc malloc's start-up settings (edge_facedet/malloc.py) in a process of
many threads and in the running service (`edge-facedet run` with RTSP cameras, each read in a
thread of its own), an environment that tunes malloc itself left alone; and the default
device AUTO compiled as AUTO:CPU on a host without GPU or NPU nodes, so the service loads
neither plugin (edge_facedet/inference/compilation.py); and PyAV left unloaded where no camera
reads with it or takes main-stream snapshots.

Arenas are counted as the memory bench counts them (benchmarks/procmem.py): glibc maps each
thread arena's heap at an address aligned to 64 MB.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from benchmarks.procmem import footprint
from edge_facedet.inference.compilation import device_to_compile
from edge_facedet.malloc import ARENA_MAX, tune_malloc
from tests.support.broker import mqtt_subscriber
from tests.support.paths import REPO
from tests.support.service import faces_of, service_config

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.support.broker import BrokerAddress
    from tests.support.media import ClipMaker
    from tests.support.rtsp import RtspServer
    from tests.support.service import ServiceProcess

CAMERAS = 4
THREADS = 8
# A process that tunes malloc (argv[1] "tune") or not, then: whether a picture-sized block
# got a mapping of its own (hblks: glibc's count of those), whether a freed 10 MB top of the
# main heap was kept, and the arenas once THREADS threads each allocated (glibc gives each
# thread an arena of its own unless bounded).
THREADED = """
import ctypes, json, os, sys, threading
from benchmarks.procmem import footprint
from edge_facedet.malloc import tune_malloc
tuned = tune_malloc(environ=os.environ) if sys.argv[1] == "tune" else False
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
libc.mallinfo2.restype = Info
mappings = libc.mallinfo2().hblks
picture = libc.malloc(3 << 20)
mapped = libc.mallinfo2().hblks > mappings
libc.free(picture)
top = libc.malloc(10 << 20)
heap = libc.mallinfo2().arena
libc.free(top)
kept = libc.mallinfo2().arena == heap
held, done = [], threading.Event()
def allocate():
    held.append(libc.malloc(1000))
    done.wait()
threads = [threading.Thread(target=allocate) for _ in range(int(sys.argv[2]))]
for thread in threads:
    thread.start()
while len(held) < len(threads):
    pass
arenas = footprint(os.getpid()).arenas
print(json.dumps({"tuned": tuned, "mapped": mapped, "kept": kept, "arenas": arenas}))
done.set()
"""


def run_threaded(mode: str, *, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", THREADED, mode, str(THREADS)],
        capture_output=True, text=True, check=True, cwd=REPO, env=env, timeout=60,
    )  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_tuned_malloc_bounds_arenas_and_keeps_pictures_in_them() -> None:
    free = run_threaded("free")
    tuned = run_threaded("tune")
    # Untuned, each thread got an arena of its own (so arenas are seen at all) and a
    # picture-sized block a mapping of its own ...
    assert free["tuned"] is False
    assert isinstance(free["arenas"], int)
    assert free["arenas"] >= THREADS, free
    assert free["mapped"] is True, free
    # ... tuned: the main heap and ARENA_MAX - 1 arenas for every other thread, pictures
    # from the heap, and a freed top below the trim threshold kept for the next one.
    expected = {"tuned": True, "mapped": False, "kept": True, "arenas": ARENA_MAX - 1}
    assert tuned == expected, tuned


def test_an_environment_that_tunes_malloc_is_left_alone() -> None:
    assert tune_malloc(environ={"MALLOC_ARENA_MAX": "8"}) is False
    assert tune_malloc(environ={"MALLOC_TRIM_THRESHOLD_": "0"}) is False
    chosen = {"GLIBC_TUNABLES": "glibc.pthread.rseq=0:glibc.malloc.mmap_threshold=65536"}
    assert tune_malloc(environ=chosen) is False
    # Another library's tunables are not malloc's.
    other = run_threaded("tune", env={"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    assert other["tuned"] is True, other
    # glibc applied the environment's bound at exec, and tune_malloc did not replace it.
    chosen_run = run_threaded("tune", env={"MALLOC_ARENA_MAX": str(ARENA_MAX + 2)})
    assert (chosen_run["tuned"], chosen_run["arenas"]) == (False, ARENA_MAX + 1), chosen_run


async def observe_running_service(
    config: dict[str, object],
    *,
    prefix: str,
    mqtt_broker: BrokerAddress,
    services: Callable[..., ServiceProcess],
    env: dict[str, str] | None = None,
) -> tuple[int, set[str], bool]:
    """A service's arenas, the OpenVINO plugins it loaded and whether it loaded PyAV, once
    every camera has published faces (every reader decodes, the detector has run)."""
    host, port = mqtt_broker.host, mqtt_broker.port
    async with mqtt_subscriber(f"{prefix}/#", host=host, port=port) as sub:
        service = services(config, env=env)
        await asyncio.to_thread(service.wait_ready)
        await sub.wait_for(
            lambda m: all(faces_of(m, prefix, f"cam{i}") for i in range(CAMERAS)), timeout=60
        )
        assert service.process is not None
        arenas = footprint(service.process.pid).arenas
        maps = await asyncio.to_thread(Path(f"/proc/{service.process.pid}/maps").read_text)
        code, _ = await asyncio.to_thread(service.terminate)
        assert code == 0, service.log()
    pyav = bool(re.search(r"/site-packages/av(\.libs)?/", maps))
    return arenas, set(re.findall(r"libopenvino_(\w+)_plugin\.so", maps)), pyav


# Alone: a memory measurement, taken with nothing beside it.
@pytest.mark.alone
async def test_the_running_service_bounds_arenas_and_loads_only_what_it_uses(
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    h264_clip: ClipMaker,
    rtsp_server: Callable[..., RtspServer],
    services: Callable[..., ServiceProcess],
) -> None:
    clip = h264_clip.repeated(seconds=90, width=640, height=360)
    server = rtsp_server(mounts={f"m{i}": clip for i in range(CAMERAS)})
    seen = {}
    # The environment's own bound (glibc's default here, eight per core) as the control: the
    # readers' threads take arenas of their own, as they did before the bound.
    for arm, env in (("tuned", None), ("environment", {"MALLOC_ARENA_MAX": "64"})):
        node = f"test-{uuid.uuid4().hex[:10]}"
        config = service_config(
            node_id=node, model_root=model_root, model_cache=model_cache,
            mqtt_port=mqtt_broker.port,
            cameras=[{"id": f"cam{i}", "url": server.url(f"m{i}")} for i in range(CAMERAS)],
        )  # fmt: skip
        seen[arm] = await observe_running_service(
            config, prefix=f"edge-facedet/{node}", mqtt_broker=mqtt_broker, services=services,
            env=env,
        )  # fmt: skip
    # One arena besides the main heap: every reader, OpenVINO's threads and the loop share it.
    # What is counted is 64 MB-aligned heaps, not arenas: an arena whose heap fills gets a
    # second heap (glibc's new_heap), and a library may map an aligned block, so one more is
    # allowed. Unbounded, the readers take one arena each (the control below: CAMERAS or more).
    assert seen["tuned"][0] <= ARENA_MAX + 1, seen
    assert seen["tuned"][0] < seen["environment"][0] / 2, seen
    assert seen["environment"][0] >= CAMERAS, seen
    # The default device, AUTO, on a host without GPU or NPU nodes loads no plugin for them.
    assert "intel_cpu" in seen["tuned"][1], seen
    if device_to_compile("AUTO") == "AUTO:CPU":
        assert not seen["tuned"][1] & {"intel_gpu", "intel_npu"}, seen
    # PyAV (17 MB resident) only where a camera reads with it or takes main-stream snapshots.
    assert not seen["tuned"][2], seen


def test_auto_is_narrowed_to_the_cpu_only_without_gpu_and_npu_nodes(tmp_path: Path) -> None:
    (tmp_path / "renderD128").touch()
    absent = ((str(tmp_path / "absent"), "renderD*"),)
    present = ((str(tmp_path / "absent"), "renderD*"), (str(tmp_path), "renderD*"))
    assert device_to_compile("AUTO", nodes=absent) == "AUTO:CPU"
    assert device_to_compile("AUTO", nodes=present) == "AUTO"
    for device in ("CPU", "GPU", "AUTO:GPU,CPU", "AUTO:-CPU", "MULTI:GPU,CPU"):
        assert device_to_compile(device, nodes=absent) == device
