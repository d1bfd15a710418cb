"""A camera's two renditions over RTSP, live from one pipeline: `/main` and `/sub`.

Run with the system interpreter (`/usr/bin/python3`, which has the GStreamer bindings):

    /usr/bin/python3 tests/support/rtsp_pair_server.py --port 8554 --main m.mp4 --sub s.mp4

A camera encodes one sensor twice, so frame i of its main stream and frame i of its
substream show one moment, and its RTCP sender reports put both on one wall clock. Two
file mounts of `rtsp_server.py` do neither: each plays its clip from when its first client
connected, so the two streams show different moments. Here one producer pipeline plays both
clips (made from one source with the same frame timing) in lockstep on the wall clock, from
when the server starts, like a camera that was on before anyone watched. Each mount's
pipeline takes the producer's encoded frames through an appsrc and payloads them (no
decoding, no encoding); its base time is the producer's, so each frame keeps its running
time and the RTCP sender reports of both mounts map it to the same wall-clock moment.

It prints ``READY <port>`` once bound, and exits with status 0 on SIGTERM or SIGINT. The
clips play once; make them as long as the run. Also prints ``EOS`` when they end.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

import gi  # type: ignore[import-not-found]  # system python only, see docstring

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found]  # noqa: E402

RENDITIONS = ("main", "sub")


class Producer:
    """Both clips in one pipeline, each to an appsink synced to the clock; every sample
    is handed to the appsrcs of its rendition's connected mounts."""

    def __init__(self, clips: dict[str, Path]) -> None:
        branches = " ".join(
            f'filesrc location="{clip}" ! qtdemux ! h264parse ! '
            f"appsink name={name} sync=true emit-signals=true max-buffers=8 drop=false"
            for name, clip in clips.items()
        )
        self.pipeline = Gst.parse_launch(branches)
        self.pipeline.use_clock(Gst.SystemClock.obtain())
        self._lock = threading.Lock()
        self._targets: dict[str, list[Gst.Element]] = {name: [] for name in clips}
        self.caps: dict[str, Gst.Caps | None] = dict.fromkeys(clips)
        for name in clips:
            sink = self.pipeline.get_by_name(name)
            sink.connect("new-sample", self._on_sample, name)

    def start(self) -> None:
        self.pipeline.set_state(Gst.State.PLAYING)
        self.pipeline.get_state(Gst.CLOCK_TIME_NONE)

    def add(self, name: str, appsrc: Gst.Element) -> None:
        with self._lock:
            self._targets[name].append(appsrc)

    def remove(self, appsrc: Gst.Element) -> None:
        with self._lock:
            for targets in self._targets.values():
                if appsrc in targets:
                    targets.remove(appsrc)

    def _on_sample(self, sink: Gst.Element, name: str) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.EOS
        self.caps[name] = sample.get_caps()
        buffer = sample.get_buffer()
        with self._lock:
            targets = list(self._targets[name])
        for appsrc in targets:
            appsrc.emit("push-buffer", buffer)
        return Gst.FlowReturn.OK


def _factory(producer: Producer, name: str) -> GstRtspServer.RTSPMediaFactory:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( appsrc name=src is-live=true format=time do-timestamp=false "
        "! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
    )
    factory.set_shared(True)
    factory.set_clock(Gst.SystemClock.obtain())

    def configure(_factory: object, media: GstRtspServer.RTSPMedia) -> None:
        element = media.get_element()
        pipeline = element.get_parent()
        # The producer's running time is this mount's: frame timestamps pass unchanged.
        pipeline.set_start_time(Gst.CLOCK_TIME_NONE)
        pipeline.set_base_time(producer.pipeline.get_base_time())
        appsrc = element.get_by_name("src")
        caps = producer.caps[name]
        if caps is not None:
            appsrc.set_property("caps", caps)
        producer.add(name, appsrc)
        media.connect("unprepared", lambda _media: producer.remove(appsrc))

    factory.connect("media-configure", configure)
    return factory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--main", type=Path, required=True)
    parser.add_argument("--sub", type=Path, required=True)
    args = parser.parse_args()

    Gst.init(None)
    producer = Producer({"main": args.main, "sub": args.sub})
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for name in RENDITIONS:
        mounts.add_factory(f"/{name}", _factory(producer, name))
    if server.attach(None) == 0:
        print(f"cannot bind {args.address}:{args.port}", file=sys.stderr)
        return 1
    producer.start()

    loop = GLib.MainLoop()
    bus = producer.pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message::eos", lambda *_: print("EOS", flush=True))
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, _quit, loop)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    producer.pipeline.set_state(Gst.State.NULL)
    return 0


def _quit(loop: GLib.MainLoop) -> bool:
    loop.quit()
    return False


if __name__ == "__main__":
    sys.exit(main())
