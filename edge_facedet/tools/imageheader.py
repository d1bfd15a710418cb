"""An image's pixel dimensions read from its header, so an oversized image is refused unread.

A few kilobytes of PNG can declare 30000x30000 pixels: decoded, that is 2.7 GB of BGR, and
OpenCV's decoders allocate it before they look at the data (`cv2.imdecode`/`imread` cannot be
asked for the size first). The offline tools call `pixel_cap_problem` before every decode.
It knows PNG, JPEG, BMP, GIF, WebP, TIFF and PNM by their first bytes (whatever the file's
name); for any other format the CLI sets OpenCV's own `OPENCV_IO_MAX_IMAGE_PIXELS` to the same
cap before OpenCV is imported (`pixel_cap_environment`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageSize",
    "pixel_cap_environment",
    "pixel_cap_problem",
    "read_image_size",
]

DEFAULT_MAX_PIXELS = 50_000_000
"""50 MP: above any camera still in common use, about 150 MB once decoded to BGR."""

# A JPEG's frame header follows its metadata segments (EXIF, ICC profiles, thumbnails); each
# is at most 64 KB, and real files have a handful. A file of thousands is not a photo.
_MAX_JPEG_SEGMENTS = 1024
_PNM_HEADER_BYTES = 1024
# JPEG start-of-frame markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


@dataclass(frozen=True, slots=True)
class ImageSize:
    """What a header declares."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def pixel_cap_environment(max_pixels: int) -> dict[str, str]:
    """OpenCV's limit for the formats `read_image_size` does not know. It is read once, when
    OpenCV's library loads, so these must be in `os.environ` before `import cv2`."""
    return {"OPENCV_IO_MAX_IMAGE_PIXELS": str(max_pixels)}


def pixel_cap_problem(path: Path, *, max_pixels: int) -> str | None:
    """Why `path` must not be decoded (its header declares more than `max_pixels`), or None.

    None also for a format this module does not know, or a header it cannot read: the
    decoder then reports the file as it would have.
    """
    try:
        size = read_image_size(path)
    except OSError:
        return None  # the decoder will say it cannot read it
    if size is None or size.pixels <= max_pixels:
        return None
    return (
        f"{size.format} header declares {size.width}x{size.height} pixels "
        f"({size.pixels / 1e6:.1f} MP), over the {max_pixels / 1e6:g} MP cap "
        "(--max-megapixels); not decoded"
    )


def read_image_size(path: Path) -> ImageSize | None:
    """The dimensions `path`'s header declares, or None (unknown format, short header)."""
    with path.open("rb") as file:
        head = file.read(32)
        for matches, parse in _FORMATS:
            if matches(head):
                return parse(file, head)
    return None


def _png(_file: BinaryIO, head: bytes) -> ImageSize | None:
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return ImageSize("PNG", width, height)


def _next_jpeg_marker(file: BinaryIO) -> int | None:
    if file.read(1) != b"\xff":
        return None
    byte = file.read(1)
    while byte == b"\xff":  # fill bytes before a marker
        byte = file.read(1)
    return byte[0] if byte else None


def _jpeg(file: BinaryIO, _head: bytes) -> ImageSize | None:
    file.seek(2)
    for _ in range(_MAX_JPEG_SEGMENTS):
        marker = _next_jpeg_marker(file)
        if marker is None or marker in (0xD9, 0xDA):  # end, or scan data before any frame
            break
        if marker in _JPEG_STANDALONE:
            continue
        # The segment's length, and for a frame header its precision, height and width.
        segment = file.read(7)
        if len(segment) < 2:
            break
        (length,) = struct.unpack_from(">H", segment)
        if marker in _JPEG_SOF and len(segment) == 7:
            _, height, width = struct.unpack_from(">BHH", segment, 2)
            return ImageSize("JPEG", width, height)
        if length < 2:
            break
        file.seek(length - len(segment), 1)
    return None


def _bmp(_file: BinaryIO, head: bytes) -> ImageSize | None:
    if len(head) < 26:
        return None
    (header_size,) = struct.unpack("<I", head[14:18])
    if header_size == 12:  # BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", head[18:22])
    else:
        width, height = struct.unpack("<ii", head[18:26])
    # A negative height is a top-down bitmap.
    return ImageSize("BMP", abs(width), abs(height))


def _gif(_file: BinaryIO, head: bytes) -> ImageSize | None:
    if len(head) < 10:
        return None
    width, height = struct.unpack("<HH", head[6:10])
    return ImageSize("GIF", width, height)


def _webp(_file: BinaryIO, head: bytes) -> ImageSize | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return ImageSize("WebP", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(head) >= 25:
        (bits,) = struct.unpack("<I", head[21:25])
        return ImageSize("WebP", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
    if chunk == b"VP8X" and len(head) >= 30:
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
        return ImageSize("WebP", width, height)
    return None


def _tiff(file: BinaryIO, _head: bytes) -> ImageSize | None:
    """Width and height from the first image file directory."""
    file.seek(0)
    order = "<" if file.read(2) == b"II" else ">"
    file.seek(4)
    offset_bytes = file.read(4)
    if len(offset_bytes) < 4:
        return None
    file.seek(struct.unpack(order + "I", offset_bytes)[0])
    count_bytes = file.read(2)
    if len(count_bytes) < 2:
        return None
    (count,) = struct.unpack(order + "H", count_bytes)
    entries = file.read(12 * count)
    sizes: dict[int, int] = {}
    for start in range(0, len(entries) - 11, 12):
        tag, kind, _ = struct.unpack(order + "HHI", entries[start : start + 8])
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT) and kind in (_TIFF_SHORT, _TIFF_LONG):
            fmt = order + ("H" if kind == _TIFF_SHORT else "I")
            sizes[tag] = struct.unpack_from(fmt, entries, start + 8)[0]
    if _TIFF_WIDTH not in sizes or _TIFF_HEIGHT not in sizes:
        return None
    return ImageSize("TIFF", sizes[_TIFF_WIDTH], sizes[_TIFF_HEIGHT])


def _pnm(file: BinaryIO, _head: bytes) -> ImageSize | None:
    """P1..P6: magic, width, height as ASCII tokens; `#` starts a comment to the line end."""
    file.seek(0)
    head = file.read(_PNM_HEADER_BYTES)
    tokens: list[bytes] = []
    for line in head.split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 3:
            break
    if len(tokens) < 3 or not (tokens[1].isdigit() and tokens[2].isdigit()):
        return None
    if len(tokens[1]) > 12 or len(tokens[2]) > 12:
        return ImageSize("PNM", 10**12, 10**12)  # absurd on its face; refuse, never int() it
    return ImageSize("PNM", int(tokens[1]), int(tokens[2]))


_Parser = Callable[[BinaryIO, bytes], ImageSize | None]
# (does the file's first 32 bytes look like it, how to read its size)
_FORMATS: tuple[tuple[Callable[[bytes], bool], _Parser], ...] = (
    (lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"), _png),
    (lambda head: head.startswith(b"\xff\xd8"), _jpeg),
    (lambda head: head.startswith(b"BM"), _bmp),
    (lambda head: head.startswith((b"GIF87a", b"GIF89a")), _gif),
    (lambda head: head.startswith(b"RIFF") and head[8:12] == b"WEBP", _webp),
    (lambda head: head.startswith((b"II*\x00", b"MM\x00*")), _tiff),
    (lambda head: head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6"), _pnm),
)
