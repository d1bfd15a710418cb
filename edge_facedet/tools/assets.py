"""Model and demo-media assets: the pinned manifest, fetch, verification and atomic install.

This module owns the list of files the service needs from outside the repository (the
face-detection-0204 IR in each precision, and the demo clips), where each comes from, its
size and SHA-384, and the only code that puts those files on disk. Every file is written to
a temporary name next to its final place, verified, fsynced and then renamed, so the service
never finds a truncated or corrupt file where it loads one.

The model manifest is copied from Open Model Zoo's descriptor
(models/intel/face-detection-0204/model.yml); it is not read at run time so the package works
on a machine that has only the wheel.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from edge_facedet import __version__
from edge_facedet.inference import model as _model
from edge_facedet.inference.model import (
    MODEL_NAME,
    Precision,
    default_model_root,
    precision_names,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "DEMO_MEDIA",
    "DEMO_MEDIA_LICENSE",
    "MODEL_FILES",
    "MODEL_NAME",
    "PRECISIONS",
    "AssetError",
    "AssetFile",
    "default_model_root",
    "fetch_demo_media",
    "fetch_model",
    "model_xml_path",
    "verify_model",
]

PRECISIONS: tuple[str, ...] = precision_names()

_CHUNK = 1 << 20


class AssetError(Exception):
    """A model or media file is missing, corrupt, or could not be fetched (one-line message)."""


@dataclass(frozen=True, slots=True)
class AssetFile:
    """One pinned file: where it goes (relative to a root), where it comes from, what it is."""

    # Relative path inside a mirror folder or an install root; both use the same layout, so
    # an install root can itself serve as the mirror for another machine.
    relpath: str
    url: str
    size: int
    sha384: str

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]


_OMZ = "https://storage.openvinotoolkit.org/repositories/open_model_zoo"


def _model_file(
    *, precision: Precision, suffix: str, release: str, size: int, sha384: str
) -> AssetFile:
    name = f"{precision.value}/{MODEL_NAME}.{suffix}"
    return AssetFile(
        relpath=_model.model_relpath(precision, suffix),
        url=f"{_OMZ}/{release}/models_bin/1/{MODEL_NAME}/{name}",
        size=size,
        sha384=sha384,
    )


# From Open Model Zoo's model.yml. The FP16-INT8 files are published only under the 2022.3
# release path; the others under 2023.0.
MODEL_FILES: Final[Mapping[Precision, tuple[AssetFile, AssetFile]]] = {
    Precision.FP32: (
        _model_file(
            precision=Precision.FP32,
            suffix="xml",
            release="2023.0",
            size=185457,
            sha384="14cdec35ec8303c0dd1dd7ed248e084c3618a6812c30e0241b9326f6d94c079079de40869879f0de9a3386c234f497fb",
        ),
        _model_file(
            precision=Precision.FP32,
            suffix="bin",
            release="2023.0",
            size=7269196,
            sha384="b27cfb3acded0881843c317c9cf04d8789abfe51b19a85d0adde89f3a021a44a2cb4a180a381a52290a2dd9ceff45e5f",
        ),
    ),
    Precision.FP16: (
        _model_file(
            precision=Precision.FP16,
            suffix="xml",
            release="2023.0",
            size=254879,
            sha384="e81dc79e9461f8a1ce8ca1a8bed9f619bc18612bb74128d9f97db53709014a47bd06b143499d58d12cd55a68a7d85418",
        ),
        _model_file(
            precision=Precision.FP16,
            suffix="bin",
            release="2023.0",
            size=3634654,
            sha384="f94ec220c5526826f2149b14a0036904d089f7ba6fbbcaa1ef1591c800ef20996115637753fbf2521e1951eb2e6dc03e",
        ),
    ),
    Precision.FP16_INT8: (
        _model_file(
            precision=Precision.FP16_INT8,
            suffix="xml",
            release="2022.3",
            size=490746,
            sha384="61e87d95a49eee865f6b315aa226a4368462803a5a891712c107c68e75c1f0e7c8de04d161e1b436f399f4f912351de4",
        ),
        _model_file(
            precision=Precision.FP16_INT8,
            suffix="bin",
            release="2022.3",
            size=1942006,
            sha384="0c0e28a56fbb7c6c0050312fa2e5244b94066d8611ebd3f312d094b4c7dc3f06d4921a11ae2b9b2116d5dcbdf658b808",
        ),
    ),
}

_SAMPLE_VIDEOS = "https://github.com/intel-iot-devkit/sample-videos/raw/master/preview"

DEMO_MEDIA_LICENSE: Final = (
    "CC BY 4.0, Intel Corporation, https://github.com/intel-iot-devkit/sample-videos"
)

# Intel sample videos (previews, 480x270 GIFs that OpenCV's FFmpeg backend decodes). Sizes and
# SHA-384 were taken from the offline mirror; upstream keeps the GIFs under preview/.
DEMO_MEDIA: Final[tuple[AssetFile, ...]] = (
    AssetFile(
        relpath="sample-videos/head-pose-face-detection-female-and-male.gif",
        url=f"{_SAMPLE_VIDEOS}/head-pose-face-detection-female-and-male.gif",
        size=2258640,
        sha384="eafd5b974e6080cacd2c5da38e7e47253cc2f0542f56bd204e78528dd3102ea392b2d764699f8c80e88126ac945e3033",
    ),
    AssetFile(
        relpath="sample-videos/face-demographics-walking.gif",
        url=f"{_SAMPLE_VIDEOS}/face-demographics-walking.gif",
        size=1222837,
        sha384="1c8412ce5bea0db670955be373fd59b2ebb7fe49f339db2759e7005ce7d2a590de45e4577330fa3c02adade16a62d5d9",
    ),
    AssetFile(
        relpath="sample-videos/classroom.gif",
        url=f"{_SAMPLE_VIDEOS}/classroom.gif",
        size=1169070,
        sha384="5623c52f8c8e02e9215fdf4abe9b630c3907585cda17bba49b860956c0b555a19bbedbb4a59657d1838a5d9f4f671c0e",
    ),
)


def _check_precision(precision: str) -> Precision:
    try:
        return Precision(precision)
    except ValueError:
        raise AssetError(
            f"unknown model precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}"
        ) from None


def model_xml_path(root: Path, precision: str) -> Path:
    """root/intel/face-detection-0204/<precision>/face-detection-0204.xml (the mirror layout).

    The tools' entry to `edge_facedet.inference.model.model_xml_path`: it takes the name as
    the user typed it and raises AssetError for an unknown one.
    """
    return _model.model_xml_path(root, _check_precision(precision))


def verify_model(*, root: Path, precision: str) -> Path:
    """Check the installed .xml and .bin (size and SHA-384) and return the .xml path.

    For a service start-up check: it raises AssetError saying which file is missing or wrong
    instead of letting OpenVINO fail on it later.
    """
    checked = _check_precision(precision)
    for asset in MODEL_FILES[checked]:
        path = root / asset.relpath
        if not path.is_file():
            raise AssetError(
                f"model file {path} is missing; install it with "
                f"`edge-facedet model fetch --precision {checked.value} --dest {root}`"
            )
        try:
            size, sha384 = _measure(path)
        except OSError as exc:
            raise AssetError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
        _compare(asset, what=str(path), size=size, sha384=sha384)
    return model_xml_path(root, precision)


def fetch_model(
    *,
    precision: str,
    dest: Path,
    mirror: Path | None = None,
    mirror_url: str | None = None,
    timeout_s: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Install one precision of the model under `dest` and return its .xml path.

    Files already at `dest` with the right size and SHA-384 are kept. Others come from
    `mirror` (a folder laid out like `dest`), else from `mirror_url` (an HTTP server with that
    layout), else from the official Open Model Zoo URL. `timeout_s` bounds each network
    operation (connect, or a wait for more data), not the whole download.
    """
    _fetch_all(
        assets=MODEL_FILES[_check_precision(precision)],
        dest=dest,
        mirror=mirror,
        mirror_url=mirror_url,
        timeout_s=timeout_s,
        progress=progress,
        kind="model",
    )
    return model_xml_path(dest, precision)


def fetch_demo_media(
    *,
    dest: Path,
    mirror: Path | None = None,
    mirror_url: str | None = None,
    timeout_s: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Install the demo clips (DEMO_MEDIA) as dest/sample-videos/<name>; return their paths.

    Same sources and rules as fetch_model; `mirror` is a folder like the shared media folder,
    with the clips at mirror/sample-videos/<name> (the same layout as dest).
    """
    _fetch_all(
        assets=DEMO_MEDIA,
        dest=dest,
        mirror=mirror,
        mirror_url=mirror_url,
        timeout_s=timeout_s,
        progress=progress,
        kind="media",
    )
    return [dest / asset.relpath for asset in DEMO_MEDIA]


def _fetch_all(
    *,
    assets: Sequence[AssetFile],
    dest: Path,
    mirror: Path | None,
    mirror_url: str | None,
    timeout_s: float,
    progress: Callable[[str], None] | None,
    kind: str,
) -> None:
    if mirror is not None and mirror_url is not None:
        raise ValueError("give either mirror or mirror_url, not both")
    # A mistyped mirror is reported even when nothing needs fetching: the caller asked for it.
    if mirror is not None and not mirror.is_dir():
        raise AssetError(
            f"{kind} mirror folder {mirror} does not exist "
            f"(it should hold files like {mirror / assets[0].relpath})"
        )
    report = progress or (lambda _message: None)
    for asset in assets:
        final = dest / asset.relpath
        if _is_installed(asset, final):
            report(f"{final}: present, size and SHA-384 verified")
            continue
        if mirror is not None:
            source = str(mirror / asset.relpath)
            # Checked before anything is created at dest, so a bad mirror leaves no trace.
            if not (mirror / asset.relpath).is_file():
                raise AssetError(f"{kind} mirror file {source} is missing")
            chunks = _read_file(mirror / asset.relpath, kind=kind)
        else:
            source = _join_url(mirror_url, asset.relpath) if mirror_url else asset.url
            chunks = _read_url(source, timeout_s=timeout_s)
        report(f"{final}: fetching from {source}")
        _install(asset=asset, final=final, chunks=chunks, source=source)
        report(f"{final}: installed ({asset.size} bytes, SHA-384 verified)")


def _join_url(base: str, relpath: str) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(relpath)


def _measure(path: Path) -> tuple[int, str]:
    digest = hashlib.sha384()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def _is_installed(asset: AssetFile, path: Path) -> bool:
    try:
        # The size check is free and catches the common truncation without hashing.
        if path.stat().st_size != asset.size:
            return False
        return _measure(path)[1] == asset.sha384
    except OSError:
        # Missing or unreadable: either way it gets (re)installed over.
        return False


def _compare(asset: AssetFile, *, what: str, size: int, sha384: str) -> None:
    if size != asset.size:
        raise AssetError(
            f"{what}: {size} bytes, expected {asset.size} (truncated or not {asset.name})"
        )
    if sha384 != asset.sha384:
        raise AssetError(
            f"{what}: SHA-384 {sha384[:16]}..., expected {asset.sha384[:16]}... "
            f"(corrupt or not the published {asset.name})"
        )


def _read_file(path: Path, *, kind: str) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    except FileNotFoundError:
        raise AssetError(f"{kind} mirror file {path} is missing") from None
    except OSError as exc:
        raise AssetError(f"cannot read {kind} mirror file {path}: {exc.strerror or exc}") from exc


def _read_url(url: str, *, timeout_s: float) -> Iterator[bytes]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise AssetError(f"{url}: only http and https URLs can be fetched")
    # The scheme is checked above, so file:// and custom schemes cannot be reached.
    request = urllib.request.Request(  # noqa: S310
        url, headers={"User-Agent": f"edge-facedet/{__version__}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            while chunk := response.read(_CHUNK):
                yield chunk
    except urllib.error.HTTPError as exc:
        raise AssetError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise AssetError(f"download of {url} failed: {exc.reason}") from exc
    except TimeoutError as exc:
        raise AssetError(f"download of {url} failed: no data for {timeout_s:g} s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise AssetError(f"download of {url} failed: {type(exc).__name__}: {exc}") from exc


def _install(*, asset: AssetFile, final: Path, chunks: Iterable[bytes], source: str) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    except OSError as exc:
        raise AssetError(f"cannot write to {final.parent}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha384()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                # Stop a wrong or hostile source from filling the disk.
                if size > asset.size:
                    raise AssetError(
                        f"{source}: more than the expected {asset.size} bytes (not {asset.name})"
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        _compare(asset, what=source, size=size, sha384=digest.hexdigest())
        # mkstemp creates 0600; a service running as another user must be able to read it.
        tmp.chmod(0o644)
        tmp.replace(final)
        _fsync_dir(final.parent)
    except OSError as exc:
        raise AssetError(f"cannot write {final}: {exc.strerror or exc}") from exc
    finally:
        # After a successful rename there is nothing left to remove.
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable, so a power cut cannot bring back the old file.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
