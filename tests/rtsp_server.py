"""A real RTSP server on loopback for the stream tests and benches/stream.py: GStreamer's RTSP server library,
serving an H.264 MP4 (played at its own pace) or a live x264-encoded test pattern.

Runs under Debian's Python (`/usr/bin/python3`, with python3-gi, gir1.2-gst-rtsp-server-1.0 and the
GStreamer good/bad/ugly plug-ins), not the project's venv:

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --file data/videos/bikes.mp4   # rtsp://127.0.0.1:8554/stream
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(file: str | None, width: int, height: int, fps: int) -> str:
    if file:
        return f'( filesrc location="{file}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )'
    return (f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
            f"! rtph264pay name=pay0 pt=96 config-interval=1 )")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--mount", default="/stream")
    parser.add_argument("--file", default=None, help="an H.264 MP4; default: a live test pattern")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.file, width, height, args.fps))
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    print(f"serving rtsp://127.0.0.1:{args.port}{args.mount}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
