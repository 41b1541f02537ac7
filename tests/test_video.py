"""`cvpipe video` on real streams made by real tools: H.264 MP4s written by ffmpeg, and an RTSP stream served by
GStreamer's RTSP server on loopback that is cut mid-run and comes back. Tests that need a tool skip when it is
missing (`.ci/run` installs them: see its apt-get line)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cvpipe.engine.checkpoint import save_checkpoint
from cvpipe.engine.video import VideoOptions, _copies, run_video
from cvpipe.errors import ConfigError, CvpipeError, DataError
from cvpipe.io.images import write_image
from cvpipe.io.streams import Frame, open_source
from cvpipe.pipeline import Pipeline

from .conftest import REPO, write_pipeline

FFMPEG = shutil.which("ffmpeg")
SYSTEM_PYTHON = "/usr/bin/python3"
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="needs ffmpeg (Debian package ffmpeg)")


def _has_rtsp_server() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


needs_rtsp = pytest.mark.skipif(not _has_rtsp_server(), reason="needs GStreamer's RTSP server under /usr/bin/python3 "
                                "(Debian: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{good,bad,ugly})")


def ffmpeg_clip(path: Path, seconds: float = 2, fps: int = 25, size: str = "320x240") -> Path:
    """An H.264 MP4 of ffmpeg's moving test pattern."""
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
                    "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    def __init__(self, port: int, *args: str):
        self.cmd = [SYSTEM_PYTHON, str(REPO / "tests" / "rtsp_server.py"), "--port", str(port), *args]
        self.url = f"rtsp://127.0.0.1:{port}/stream"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True)
        assert "serving" in self.process.stdout.readline()

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()


def cut_later(server, *, after: float, down: float) -> threading.Thread:
    """A started thread that kills `server` (anything with kill() and start()) after `after` s, for `down` s."""
    def cut() -> None:
        time.sleep(after)
        server.kill()
        time.sleep(down)
        server.start()

    thread = threading.Thread(target=cut)
    thread.start()
    return thread


# ----------------------------------------------------------------------------- sources


@needs_ffmpeg
def test_a_file_gives_every_frame_or_every_nth_with_its_time(tmp_path):
    clip = ffmpeg_clip(tmp_path / "clip.mp4", seconds=2, fps=25)
    source = open_source(str(clip))
    frames = list(source)
    source.close()
    assert len(frames) == 50 and source.fps == 25 and not source.live
    assert [f.index for f in frames] == list(range(50))
    assert frames[10].position == pytest.approx(0.4) and frames[0].image.shape == (240, 320, 3)
    strided = open_source(str(clip), stride=3)
    indices = [f.index for f in strided]
    assert indices == list(range(0, 50, 3))
    # the frames are the file's: frame 30 equals what ffmpeg itself decodes (up to colour conversion rounding)
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(clip), "-vf", "select=eq(n\\,30)", "-vframes", "1",
                    str(tmp_path / "f30.png")], check=True)
    reference = cv2.cvtColor(cv2.imread(str(tmp_path / "f30.png")), cv2.COLOR_BGR2RGB)
    assert np.abs(frames[30].image.astype(int) - reference).mean() < 3


@needs_ffmpeg
def test_a_truncated_file_ends_early_with_a_note_and_garbage_is_refused(tmp_path):
    clip = ffmpeg_clip(tmp_path / "clip.mp4", seconds=2)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])  # the moov atom is at the end: ffmpeg's default layout
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    for path in (cut, bad):
        with pytest.raises(DataError, match=str(path.name)):
            open_source(str(path))
    faststart = tmp_path / "faststart.mp4"  # moov first, as streaming-friendly files are: a cut one still opens
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(clip), "-c", "copy", "-movflags", "+faststart",
                    str(faststart)], check=True)
    data = faststart.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    source = open_source(str(cut))
    frames = list(source)
    assert 0 < len(frames) < 50
    assert "ended at frame" in source.stats.ended


def test_a_folder_plays_in_name_order_and_skips_an_unreadable_file(tmp_path):
    for i in range(4):
        write_image(tmp_path / "frames" / f"{i:03d}.png", np.full((32, 48, 3), i * 40, np.uint8))
    (tmp_path / "frames" / "002b.png").write_bytes(b"broken")
    source = open_source(str(tmp_path / "frames"), fps=10)
    frames = list(source)
    assert [f.name for f in frames] == ["000.png", "001.png", "002.png", "003.png"]
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 40, 80, 120]
    assert frames[1].position == pytest.approx(0.1)
    assert source.stats.bad_files and source.stats.bad_files[0][0] == "002b.png"


def test_bad_sources_say_what_to_do(tmp_path):
    write_image(tmp_path / "one.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(CvpipeError, match="no such file or folder"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(CvpipeError, match="cvpipe predict"):
        open_source(str(tmp_path / "one.png"))
    with pytest.raises(CvpipeError, match="--stride"):
        open_source(str(tmp_path), stride=0)
    start = time.perf_counter()
    with pytest.raises(DataError, match="cannot open"):
        open_source(f"rtsp://127.0.0.1:{free_port()}/nothing")  # nothing listens: refused at once
    assert time.perf_counter() - start < 10


@needs_ffmpeg
def test_an_http_stream_served_by_ffmpeg_is_read_live(tmp_path):
    clip = ffmpeg_clip(tmp_path / "clip.mp4", seconds=3)
    port = free_port()
    server = subprocess.Popen([FFMPEG, "-v", "error", "-re", "-i", str(clip), "-c", "copy", "-f", "mpegts",
                               "-listen", "1", f"http://127.0.0.1:{port}/live.ts"])
    try:
        for _ in range(50):  # until ffmpeg listens
            try:
                source = open_source(f"http://127.0.0.1:{port}/live.ts", reconnect_timeout=1)
                break
            except DataError:
                time.sleep(0.1)
        assert source.live
        frames = []
        for frame in source:
            frames.append(frame)
            time.sleep(0.1)  # a slow consumer: the capture thread keeps only the newest frame
        source.close()
    finally:
        server.kill()
    assert 10 <= len(frames) < 75 and source.stats.skipped_live > 0
    assert [f.index for f in frames] == sorted(f.index for f in frames)
    assert "did not come back" in source.stats.ended  # the stream ended: retried for 1 s, then the run ends


def test_a_live_frame_is_written_as_often_as_real_time_needs():
    frame = Frame(7, np.zeros((2, 2, 3), np.uint8), position=2.0, captured=0.0)
    assert _copies(frame, None, 25) == 1
    assert _copies(frame, 1.8, 25) == 5  # 0.2 s at 25 fps
    assert _copies(frame, 1.999, 25) == 1  # never fewer than one
    assert _copies(frame, -60.0, 25) == 25  # a long reconnection: at most one second's freeze


# ----------------------------------------------------------------------------- the command

SEGMENT = """
name: video_fcn
task: segment
data: {{format: masks, root: {root}, classes: [background, bright]}}
model:
  backbone: {{name: mobilenetv2_050, out_indices: [4]}}
  head: {{name: fcn, variant: 32s}}
train: {{workers: 0}}
output: {{dir: {out}}}
"""


def segmentation_pipeline(tmp_path, *overrides: str) -> tuple[Pipeline, Path]:
    """A tiny untrained FCN pipeline and a checkpoint of it (video needs a model, not a good one)."""
    from cvpipe.models.heads import build_model

    text = SEGMENT.format(root=tmp_path, out=tmp_path)
    pipeline = Pipeline.from_yaml(write_pipeline(tmp_path / "seg.yaml", text), list(overrides))
    torch.manual_seed(0)
    model = build_model(pipeline.config, 2, pretrained=False)
    save_checkpoint(tmp_path / "seg.pt", {"model": model.state_dict(), "classes": ["background", "bright"]})
    return pipeline, tmp_path / "seg.pt"


@needs_ffmpeg
def test_segmentation_runs_through_the_same_command(tmp_path):
    pipeline, weights = segmentation_pipeline(tmp_path)
    clip = ffmpeg_clip(tmp_path / "clip.mp4", seconds=1, fps=10, size="96x64")
    report = pipeline.video(str(clip), tmp_path / "out" / "seg.mp4", weights=weights)
    assert report.frames == 10
    lines = [json.loads(line) for line in (tmp_path / "out" / "seg.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(10))
    assert all(sum(line["class_shares"].values()) == pytest.approx(1, abs=1e-3) for line in lines)
    assert all(line["wait_ms"] <= line["latency_ms"] for line in lines)
    written = cv2.VideoCapture(str(tmp_path / "out" / "seg.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    assert (int(written.get(cv2.CAP_PROP_FRAME_WIDTH)), int(written.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (96, 64)
    assert not list((tmp_path / "out").glob(".*part*"))  # the MP4 was moved into place


def test_show_without_a_display_is_a_clear_error(tmp_path):
    pipeline, weights = segmentation_pipeline(tmp_path)
    with pytest.raises(ConfigError, match="--show"):
        run_video(pipeline.config, [str(tmp_path)], weights, outs=[None], options=VideoOptions(show=True))


@pytest.mark.parametrize("setting", ["video.track=true", "video.lines={door: [[0.5, 0], [0.5, 1]]}",
                                     "video.zones={lot: [[0, 0], [1, 0], [1, 1]]}"])
def test_tracking_and_counting_need_a_detection_pipeline(tmp_path, setting):
    with pytest.raises(ConfigError, match=rf"{setting.split('=')[0]}.*detection and instance pipelines"):
        segmentation_pipeline(tmp_path, setting)


@pytest.fixture(scope="module")
def coco_ssd():
    from cvpipe.data.fetchers import fetch_dataset
    from cvpipe.models.weights import WeightsCatalog

    WeightsCatalog.load(REPO / "weights").fetch("ssd_mobilenet_v2.coco")
    videos = fetch_dataset("videos", REPO / "data")
    return REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml", videos / "bikes.mp4"


@pytest.mark.assets
def test_the_coco_ssd_tracks_people_and_cars_in_real_footage(tmp_path, coco_ssd, monkeypatch):
    pipeline_file, bikes = coco_ssd
    monkeypatch.chdir(REPO)
    pipeline = Pipeline.from_yaml(pipeline_file, ["video.track=true", f"output.dir={tmp_path}"])
    report = pipeline.video(str(bikes), tmp_path / "bikes.mp4", max_frames=60)
    assert report.frames == 60 and report.stopped == "--max-frames 60"
    lines = [json.loads(line) for line in (tmp_path / "bikes.jsonl").read_text().splitlines()]
    assert len(lines) == 60 and {"frame", "time", "latency_ms", "boxes", "scores", "labels", "track_id"} <= set(lines[0])
    labels = {label for line in lines for label in line["labels"]}
    assert {"person", "car"} <= labels, labels
    # one object keeps its id: some id is present in at least 20 consecutive frames
    longest, run, previous = 0, {}, set()
    for line in lines:
        ids = set(line["track_id"])
        run = {i: run.get(i, 0) + 1 if i in previous else 1 for i in ids}
        longest = max([longest, *run.values()])
        previous = ids
    assert longest >= 20, longest
    summary = json.loads((tmp_path / "bikes.summary.json").read_text())
    assert summary["frames"] == 60 and summary["tracks"] == len(report.track_ids) > 0
    assert int(cv2.VideoCapture(str(tmp_path / "bikes.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 60


@pytest.mark.assets
@needs_rtsp
def test_an_rtsp_stream_cut_mid_run_reconnects_and_the_run_goes_on(tmp_path, coco_ssd, monkeypatch):
    pipeline_file, _ = coco_ssd
    monkeypatch.chdir(REPO)
    server = RtspServer(free_port(), "--size", "320x240")
    server.start()
    pipeline = Pipeline.from_yaml(pipeline_file, [f"output.dir={tmp_path}", "video.reconnect_timeout=15"])
    cutter = cut_later(server, after=2.5, down=2.0)
    try:
        report = pipeline.video(server.url, tmp_path / "live.mp4", duration=9)
    finally:
        cutter.join()
        server.kill()
    stats = report.stats
    assert stats.drops >= 1 and stats.reconnects >= 1, stats
    assert report.stopped == "--duration 9 s"
    lines = [json.loads(line) for line in (tmp_path / "live.jsonl").read_text().splitlines()]
    times = [line["time"] for line in lines]
    assert max(b - a for a, b in zip(times, times[1:])) >= 1.5  # the cut, seen as a gap
    assert times[-1] - times[0] >= 6  # frames before and after it
    assert stats.skipped_live > 0  # newest-frame policy: the model (≈15 FPS) is slower than the stream (25)
    assert report.latency(50) < 500, report.latency(50)  # bounded: no queue builds up
    assert (tmp_path / "live.mp4").exists()
    sys.stdout.write(f"rtsp: {report.frames} frames, {report.fps:.1f} FPS, latency p50 {report.latency(50):.0f} ms\n")


@needs_ffmpeg
def test_a_long_run_prints_progress_lines_as_it_goes(tmp_path, monkeypatch):
    """Off a terminal (a log, CI), a plain line per stream every few seconds, each printed and flushed at once."""
    import io

    import cvpipe.engine.video as video
    from cvpipe.console import make_console

    monkeypatch.setattr(video, "VIDEO_LOG_EVERY_S", 0.0)  # a line per frame, so that a short clip shows them
    pipeline, weights = segmentation_pipeline(tmp_path)
    clip = ffmpeg_clip(tmp_path / "clip.mp4", seconds=1, fps=6, size="96x64")
    log = io.StringIO()
    pipeline.console = make_console(file=log, width=200)
    report = pipeline.video(str(clip), tmp_path / "out" / "seg.mp4", weights=weights)
    lines = [line for line in log.getvalue().splitlines() if line.startswith(f"{clip}: ")]
    assert report.frames == 6 and len(lines) == 6
    assert lines[0].startswith(f"{clip}: 1/6 (17 %)") and lines[-1].startswith(f"{clip}: 6/6 (100 %)")
    assert all(" FPS, latency " in line and line.endswith(" ms") for line in lines[1:])


def test_fetched_data_is_found_by_its_short_name_from_any_folder(capsys, coco_ssd, tmp_path, monkeypatch):
    """The video quickstart's command, verbatim but for a frame limit, from an empty folder: `videos/bikes.mp4` is
    the fetched clip in the data folder, `coco_ssd_mobilenet_v2` the bundled pipeline."""
    from cvpipe.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["video", "coco_ssd_mobilenet_v2", "--source", "videos/bikes.mp4", "--out", "runs/video/bikes.mp4",
                 "--set", "video.track=true", "--max-frames", "3"]) == 0
    assert json.loads((tmp_path / "runs" / "video" / "bikes.summary.json").read_text())["frames"] == 3
    assert main(["video", "coco_ssd_mobilenet_v2", "--source", "videos/no_such.mp4"]) == 2
    assert "here or in the data folder" in capsys.readouterr().err
