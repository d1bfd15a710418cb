"""A real RTSP server for the camera tests: GStreamer's RTSP server, one mount per H.264 clip.

Run with the system interpreter (`/usr/bin/python3`, which has python3-gi and
gir1.2-gst-rtsp-server-1.0), not the project venv:

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 --mount cam1=/tmp/clip.mp4

It prints ``READY <port>`` on stdout once the port is bound and exits with status 0 on SIGTERM
or SIGINT. Each mount is shared (one pipeline however many clients) and plays its clip once at
its own frame rate; it does not loop, so make the clip as long as the test needs.

Stalls (a stream that stops sending while its TCP connection stays open) are simulated by the
test sending SIGSTOP to this process and SIGCONT later: the kernel keeps the sockets open, the
server sends nothing, and unlike an in-pipeline `valve` nothing can leak keep-alives or RTCP
reports that would make the stall look partial.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi  # type: ignore[import-not-found]  # system python only, see docstring

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found]  # noqa: E402

# The container decides the demuxer; every clip carries H.264.
_DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".mkv": "matroskademux", ".ts": "tsdemux"}


def launch_line(*, clip: Path) -> str:
    """The media pipeline for one clip: no decoding, only demux, parse and payload.

    The server's CPU share beside the service is measured in docs/benchmarks.md.
    """
    demuxer = _DEMUXERS.get(clip.suffix.lower())
    if demuxer is None:
        raise SystemExit(f"unsupported clip container: {clip}")
    # config-interval=-1 repeats SPS/PPS before every IDR, so a client joining a shared
    # media mid-stream (or after a resolution change) can start decoding at the next IDR.
    return (
        f'( filesrc location="{clip}" ! {demuxer} ! h264parse config-interval=-1 '
        "! rtph264pay name=pay0 pt=96 )"
    )


def parse_mount(*, spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {spec!r}")
    clip = Path(path)
    if not clip.is_file():
        raise argparse.ArgumentTypeError(f"clip not found: {clip}")
    return name, clip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument(
        "--mount",
        action="append",
        required=True,
        type=lambda spec: parse_mount(spec=spec),
        help="NAME=PATH, served as rtsp://ADDRESS:PORT/NAME; repeatable",
    )
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for name, clip in args.mount:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(clip=clip))
        factory.set_shared(True)
        mounts.add_factory(f"/{name}", factory)

    if server.attach(None) == 0:
        print(f"cannot bind {args.address}:{args.port}", file=sys.stderr)
        return 1
    bound_port = server.get_bound_port()

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, _quit, loop)
    print(f"READY {bound_port}", flush=True)
    loop.run()
    return 0


def _quit(loop: GLib.MainLoop) -> bool:
    loop.quit()
    return False  # GLib.SOURCE_REMOVE: the handler is not needed again


if __name__ == "__main__":
    sys.exit(main())
