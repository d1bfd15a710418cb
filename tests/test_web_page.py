"""The web page in a real browser: headless Chromium (Selenium) on the real service.

Four looped file cameras, one per image mode: `hikers` (frame: the frame with its boxes),
`people` (blurred_frame), `closeup` (crop: its latest face snapshot, never the frame) and
`meta` (snapshots off: metadata only). The page must show four tiles, pictures that change
over time on the frame cameras, a face snapshot on the crop camera, no picture at all on the
metadata-only one, and face counts that are the ones the service published on MQTT for the
same frame. Screenshots go to a temporary folder (and /tmp/web-shots/ when it exists).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.broker import mqtt_subscriber
from tests.support.paths import FACE_VIDEO, HIKERS_VIDEO, MEDIA
from tests.support.service import faces_of, service_config

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from selenium.webdriver.remote.webdriver import WebDriver

    from tests.support.broker import BrokerAddress, Collector
    from tests.support.service import ServiceProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CLOSE_UP_VIDEO = MEDIA / "videos" / "openmpf_new_face_video_rotation_baked_640x480.mp4"
SHOTS = Path("/tmp/web-shots")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (deploy/setup.sh installs them)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1500",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


async def _until(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll `condition` (quick browser calls) while the loop keeps collecting MQTT."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {value!r})")
        await asyncio.sleep(0.2)


def _tiles(driver: WebDriver) -> dict[str, dict[str, Any]]:
    """What each tile shows: its seq, faces, tile image (src, loaded size) and any <img>."""
    found: dict[str, dict[str, Any]] = driver.execute_script(
        """
        const out = {};
        for (const tile of document.querySelectorAll("article.tile")) {
          const img = tile.querySelector("img.tile-image");
          out[tile.dataset.camera] = {
            seq: tile.dataset.seq || null,
            faces: tile.querySelector("dd.faces").textContent,
            src: img ? img.getAttribute("src") : null,
            width: img ? img.naturalWidth : 0,
            imgs: tile.querySelectorAll("img").length,
            placeholder: tile.querySelector(".placeholder").textContent,
          };
        }
        return out;
        """
    )
    return found


def _shot(driver: WebDriver, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path))
    if SHOTS.is_dir():
        shutil.copy(path, SHOTS / path.name)
    return path


def _counts_match_mqtt(
    driver: WebDriver, collector: Collector, prefix: str
) -> dict[str, tuple[int, int]] | None:
    """Each tile's (seq, faces) where MQTT has that frame's faces message; None if a count
    differs from the message's."""
    shown = {}
    for camera, tile in _tiles(driver).items():
        if not tile["seq"]:
            continue
        seq, faces = int(tile["seq"]), int(tile["faces"])
        published = [p for p in faces_of(collector.messages, prefix, camera) if p["seq"] == seq]
        if published:
            assert len(published[0]["faces"]) == faces, (camera, seq, faces, published[0])
            shown[camera] = (seq, faces)
    return shown


async def test_page_shows_four_cameras_with_pictures_only_where_images_are_on(
    tmp_path: Path,
    model_root: Path,
    model_cache: Path,
    mqtt_broker: BrokerAddress,
    services: Callable[..., ServiceProcess],
    browser: WebDriver,
) -> None:
    node = f"test-{uuid.uuid4().hex[:10]}"
    prefix = f"edge-facedet/{node}"
    looped = {"loop": True}
    config = service_config(
        node_id=node,
        model_root=model_root,
        model_cache=model_cache,
        mqtt_port=mqtt_broker.port,
        cameras=[
            {"id": "hikers", "url": str(HIKERS_VIDEO), "snapshots": {"mode": "frame"}, **looped},
            {
                "id": "people",
                "url": str(FACE_VIDEO),
                "snapshots": {"mode": "blurred_frame"},
                **looped,
            },
            {"id": "closeup", "url": str(CLOSE_UP_VIDEO), "snapshots": {"mode": "crop"}, **looped},
            {"id": "meta", "name": "Metadata only", "url": str(FACE_VIDEO), **looped},
        ],
    )
    config["defaults"]["detect_fps"] = 4
    config["defaults"]["tracking"] = {"min_hits": 2, "max_age_s": 1.0}
    shots = tmp_path / "shots"
    shots.mkdir()
    async with mqtt_subscriber(
        f"{prefix}/cameras/+/faces", host=mqtt_broker.host, port=mqtt_broker.port
    ) as collector:
        service = services(config)
        await asyncio.to_thread(service.wait_ready)
        url = f"http://127.0.0.1:{service.metrics_port}/"
        browser.get(url)
        await _until(lambda: len(_tiles(browser)) == 4, timeout=10, what="four tiles")

        def pictured() -> dict[str, dict[str, Any]] | None:
            tiles = _tiles(browser)
            ready = all(tiles[c]["width"] > 0 for c in ("hikers", "people", "closeup"))
            return tiles if ready else None

        first = await _until(pictured, timeout=25, what="a picture on every image camera")
        _shot(browser, shots, "page-first")

        def moved() -> dict[str, dict[str, Any]] | None:
            tiles = _tiles(browser)
            changed = all(
                tiles[c]["src"] != first[c]["src"] and tiles[c]["width"] > 0
                for c in ("hikers", "people")
            )
            return tiles if changed else None

        later = await _until(moved, timeout=10, what="new frames on the frame cameras")
        _shot(browser, shots, "page-later")

        # Every count the page shows is the one MQTT carried for the same frame, and at least
        # one tile showed faces (so the match is not 0 == 0 everywhere).
        def faces_matched() -> bool:
            shown = _counts_match_mqtt(browser, collector, prefix)
            return shown is not None and any(faces > 0 for _, faces in shown.values())

        await _until(faces_matched, timeout=10, what="a tile with faces matching its MQTT message")

        # The metadata-only camera: no picture on the page, none from the API.
        assert later["meta"]["imgs"] == 0 and later["meta"]["src"] is None
        assert "metadata only" in later["meta"]["placeholder"]
        assert service.http_get("/api/cameras/meta/latest.jpg")[0] == 404
        sources = browser.execute_script(
            "return [...document.images].map(i => i.getAttribute('src'))"
        )
        assert not any("/meta/" in source for source in sources), sources
        status, body = service.http_get("/api/cameras")
        cameras = {c["id"]: c for c in json.loads(body)["cameras"]}
        assert status == 200 and cameras["meta"]["images"] == "off"
        assert cameras["meta"]["image"] is False and cameras["meta"]["frames"] > 0
        # The crop camera's tile is a face snapshot (small), not its 640x480 frame.
        status, crop = service.http_get("/api/cameras/closeup/latest.jpg")
        assert status == 200 and crop[:2] == b"\xff\xd8"
        assert later["closeup"]["width"] < 640
        assert not browser.get_log("browser") or all(
            entry["level"] != "SEVERE" for entry in browser.get_log("browser")
        )
