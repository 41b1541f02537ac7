"""`cvpipe video` watched and counted: the live page (`--serve`) in a real headless Chromium, several sources in
one run, line and zone counting on a clip made with ffmpeg, and an HTTP MJPEG camera feed (ffmpeg's `mpjpeg`
muxer) that drops and comes back. Tests that need a tool skip when it is missing (`.ci/run` installs them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvpipe.cli import build_parser
from cvpipe.config import VideoConfig
from cvpipe.engine.video import stream_stem
from cvpipe.errors import ConfigError, CvpipeError, DataError
from cvpipe.io.live_view import LiveView, parse_address
from cvpipe.io.streams import open_source
from cvpipe.ops.counting import Counting
from cvpipe.ops.detections import Detections
from cvpipe.pipeline import Pipeline

from .conftest import REPO
from .test_video import (
    FFMPEG,
    coco_ssd,
    cut_later,
    ffmpeg_clip,
    free_port,
    needs_ffmpeg,
    segmentation_pipeline,
)

__all__ = ["coco_ssd"]  # the fixture, shared with test_video
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (Debian package chromium)")


# ----------------------------------------------------------------------------- counting, by hand


def tracked(boxes, labels, ids) -> Detections:
    return Detections(np.array(boxes, np.float32), np.ones(len(labels), np.float32), np.array(labels),
                      track_ids=np.array(ids))


def moving_box(counting: Counting, xs, label: int = 0, track: int = 1, size=(100, 300, 3)) -> dict:
    record = {}
    for x in xs:
        record = counting.update(size, tracked([[x, 40, x + 20, 60]], [label], [track]))
    return record


def test_a_box_that_crosses_a_line_is_counted_once_in_its_direction_and_one_that_grazes_it_is_not():
    lines = {"door": [[150, 0], [150, 100]]}  # pixels, drawn top to bottom
    right_way = Counting(VideoConfig(lines=lines), ["cat", "dog"])
    record = moving_box(right_way, range(0, 300, 10))
    assert record["lines"] == {"door": {"in": {"cat": 1}, "out": {}}}
    moving_box(right_way, range(300, 0, -10), label=1, track=2)  # a dog comes back the other way
    assert right_way.counts()["lines"] == {"door": {"in": {"cat": 1}, "out": {"dog": 1}}}
    grazing = Counting(VideoConfig(lines=lines), ["cat", "dog"])
    record = moving_box(grazing, [100, 120, 140, 145, 140, 120, 100])  # its box overlaps the line, never all past
    assert record["lines"] == {"door": {"in": {}, "out": {}}}


def test_a_zone_counts_who_stands_in_it_now_and_remembers_who_was_there():
    zones = {"right": [[0.7, 0], [1, 0], [1, 1], [0.7, 1]]}  # fractions of a 300 × 100 frame: x ≥ 210
    counting = Counting(VideoConfig(zones=zones), ["cat", "dog"])
    assert moving_box(counting, [100, 180])["zones"] == {"right": {}}  # bottom centre at x = 190: outside
    assert moving_box(counting, [230])["zones"] == {"right": {"cat": 1}}
    two = counting.update((100, 300, 3), tracked([[230, 40, 250, 60], [240, 50, 260, 90]], [0, 1], [1, 2]))
    assert two["zones"] == {"right": {"cat": 1, "dog": 1}}
    assert moving_box(counting, [20])["zones"] == {"right": {}}
    assert counting.summary()["zones"] == {"right": {"objects_seen": {"cat": 1, "dog": 1}, "most_at_once": 2}}


def test_counting_coordinates_outside_the_frame_say_which_and_how_to_fix_it():
    counting = Counting(VideoConfig(lines={"door": [[150, 0], [350, 100]]}), ["cat"])
    with pytest.raises(ConfigError, match=r"video.lines.door.*\(350, 100\).*300×100"):
        moving_box(counting, [0])
    with pytest.raises(Exception, match="at least 3"):
        VideoConfig(zones={"tri": [[0, 0], [1, 1]]})


# ----------------------------------------------------------------------------- the live page, without a model


def read_mjpeg_part(url: str, timeout: float = 5) -> np.ndarray:
    """The first frame of an MJPEG stream, decoded (RGB)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        header = b""
        while not header.endswith(b"\r\n\r\n"):
            header += response.read(1)
        length = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        data = response.read(length)
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_the_page_serves_the_newest_frame_and_a_viewer_never_holds_up_the_model():
    view = LiveView("0", ["cam a", "cam <b>"])
    try:
        assert view.server.server_address[0] == "127.0.0.1"  # nothing exposed unless a host is given
        with pytest.raises(CvpipeError, match="cannot listen there"):  # the port is taken: said, not a traceback
            LiveView(str(view.server.server_address[1]), ["again"])
        page = urllib.request.urlopen(view.url, timeout=5).read().decode()
        assert "/stream/1.mjpg" in page and "cam &lt;b&gt;" in page  # names escaped
        assert "http" not in page.replace(view.url, "").split("<script>")[0].lower()  # no external asset
        started = time.perf_counter()
        for value in range(200):  # nobody reads: publishing never waits (no encoding, no queue)
            view.publish(0, np.full((48, 64, 3), value, np.uint8), {"fps": 1.0, "frame": value})
        assert time.perf_counter() - started < 0.5
        late = read_mjpeg_part(view.url + "stream/0.mjpg")  # a late viewer starts at the newest frame
        assert late.shape == (48, 64, 3) and abs(int(late.mean()) - 199) <= 2
        stats = json.loads(urllib.request.urlopen(view.url + "stats.json", timeout=5).read())
        assert stats["streams"][0]["frame"] == 199 and stats["streams"][1] == {}
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(view.url + "stream/7.mjpg", timeout=5)
    finally:
        view.close()


def test_each_source_names_its_files():
    assert stream_stem("rtsp://10.0.0.5:8554/cam/1") == "10.0.0.5_8554_cam_1"
    assert stream_stem("3") == "camera3" and stream_stem("data/street.mp4") == "street"


def test_serve_addresses():
    assert parse_address("8000") == ("127.0.0.1", 8000)
    assert parse_address("0.0.0.0:8000") == ("0.0.0.0", 8000)
    assert parse_address("[::1]:9") == ("::1", 9)
    with pytest.raises(CvpipeError, match="HOST:PORT"):
        parse_address("localhost")
    args = build_parser().parse_args(["video", "p.yaml", "--source", "a.mp4", "b.mp4", "--source", "rtsp://x/y"])
    assert args.source == ["a.mp4", "b.mp4", "rtsp://x/y"]


# ----------------------------------------------------------------------------- the page in a real browser


def chromium(*args: str, wait_ms: int = 2500) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=800,420", f"--timeout={wait_ms}", *args], capture_output=True, text=True,
                          timeout=60)


@needs_ffmpeg
@needs_chromium
def test_headless_chromium_watches_the_live_page(tmp_path):
    _, weights = segmentation_pipeline(tmp_path)
    clip = ffmpeg_clip(tmp_path / "clip.mp4", seconds=60, fps=25, size="320x240")  # a moving pattern and a clock
    port = free_port()
    run = subprocess.Popen([sys.executable, "-m", "cvpipe", "video", str(tmp_path / "seg.yaml"), "--source", str(clip),
                            "--weights", str(weights), "--out", str(tmp_path / "out" / "clip.mp4"), "--serve",
                            str(port), "--duration", "25"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}/"
        for line in run.stdout:
            if "live view:" in line:
                assert url in line
                break
        for _ in range(100):  # until the first frame is out
            if b'"fps"' in urllib.request.urlopen(url + "stats.json", timeout=5).read():
                break
            time.sleep(0.1)
        shots = []
        for k in range(2):
            shot = tmp_path / f"shot{k}.png"
            chromium(f"--screenshot={shot}", url)
            shots.append(cv2.imread(str(shot)))
            time.sleep(1)
        for wait_ms in (2500, 5000, 10000):  # the page polls stats.json; on a loaded machine its answer can be late
            dom = chromium("--dump-dom", url, wait_ms=wait_ms).stdout
            if "FPS" in dom:
                break
    finally:
        run.terminate()
        run.wait(timeout=30)
    first, second = shots
    assert first.shape == (420, 800, 3)
    tile = (slice(40, 250), slice(10, 390))  # the video's place on the page
    assert first[tile].std() > 20, "the stream's picture is not on the page"
    assert np.abs(first[tile].astype(int) - second[tile]).mean() > 1, "two screenshots a second apart are alike"
    assert "FPS" in dom and "latency" in dom and "stream: playing" in dom, dom[-2000:]


# ----------------------------------------------------------------------------- with a real detector


def cat_clip(path: Path, leftwards: bool = False, seconds: int = 4) -> Path:
    """A real photo (a cat) moving across a grey frame at constant speed, made by ffmpeg."""
    photo = REPO / "data" / "photos" / "chelsea.png"
    if not photo.exists():
        from cvpipe.data.fetchers import fetch_dataset

        fetch_dataset("photos", REPO / "data")
    x = "440-t*105" if leftwards else "0+t*105"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"color=c=gray:s=640x360:r=25:d={seconds}",
                    "-i", str(photo), "-filter_complex", f"[1]scale=200:-1[cat];[0][cat]overlay=x='{x}':y=90",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


@pytest.mark.assets
@needs_ffmpeg
def test_two_clips_in_one_run_count_a_cat_crossing_each_way_in_one_model_call(tmp_path, coco_ssd, monkeypatch):
    pipeline_file, _ = coco_ssd
    monkeypatch.chdir(REPO)
    right = cat_clip(tmp_path / "right.mp4")
    left = cat_clip(tmp_path / "left.mp4", leftwards=True)
    import cvpipe.tasks.detect as detect_module

    calls = []
    real_detect = detect_module.detect
    monkeypatch.setattr(detect_module, "detect", lambda model, images, *a, **k: calls.append(len(images))
                        or real_detect(model, images, *a, **k))
    counting = ["video.lines={door: [[0.5, 0], [0.5, 1]]}", "video.zones={right: [[448, 0], [640, 0], [640, 360], "
                "[448, 360]]}"]
    pipeline = Pipeline.from_yaml(pipeline_file, [f"output.dir={tmp_path}", *counting])
    reports = pipeline.video([str(right), str(left)], tmp_path / "out")
    assert [r.frames for r in reports] == [100, 100] and set(calls) == {2}  # both streams' frames in each call
    by_name = {Path(r.source).stem: json.loads((tmp_path / "out" / f"{Path(r.source).stem}.summary.json").read_text())
               for r in reports}
    assert by_name["right"]["lines"] == {"door": {"in": {"cat": 1}, "out": {}}}
    assert by_name["left"]["lines"] == {"door": {"in": {}, "out": {"cat": 1}}}
    assert by_name["right"]["zones"]["right"]["objects_seen"] == {"cat": 1}  # it ends standing there
    assert by_name["left"]["zones"]["right"]["objects_seen"] == {"cat": 1}  # it starts there
    assert by_name["right"]["tracks"] == by_name["left"]["tracks"] == 1  # each stream has its own tracker
    lines = [json.loads(line) for line in (tmp_path / "out" / "right.jsonl").read_text().splitlines()]
    assert lines[0]["lines"]["door"]["in"] == {} and lines[-1]["lines"]["door"]["in"] == {"cat": 1}
    assert lines[-1]["zones"]["right"] == {"cat": 1} and "track_id" in lines[-1]
    for name in ("right", "left"):
        assert int(cv2.VideoCapture(str(tmp_path / "out" / f"{name}.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 100


# ----------------------------------------------------------------------------- an HTTP MJPEG camera


class MjpegCamera:
    """What many IP cameras serve: multipart JPEG over HTTP, here ffmpeg's `mpjpeg` muxer listening on loopback,
    in real time. `kill()` cuts the feed; `start()` brings it back on the same address."""

    def __init__(self, clip: Path, port: int):
        self.clip, self.url = clip, f"http://127.0.0.1:{port}/feed.mjpg"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([FFMPEG, "-v", "quiet", "-re", "-stream_loop", "-1", "-i", str(self.clip),
                                         "-f", "mpjpeg", "-q:v", "5", "-listen", "1", self.url])

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()


def open_when_listening(url: str, **options):
    for _ in range(50):
        try:
            return open_source(url, **options)
        except DataError:
            time.sleep(0.1)
    raise AssertionError(f"nothing served {url}")


@needs_ffmpeg
def test_an_http_mjpeg_camera_is_read_live_and_reconnects_after_a_cut(tmp_path):
    camera = MjpegCamera(ffmpeg_clip(tmp_path / "clip.mp4", seconds=2, size="160x120"), free_port())
    camera.start()
    cutter = None
    try:
        source = open_when_listening(camera.url, reconnect_timeout=10)
        assert source.live
        cutter = cut_later(camera, after=2.0, down=1.5)
        frames, started = [], time.perf_counter()
        for frame in source:
            frames.append(frame)
            if time.perf_counter() - started > 6:
                break
        source.close()
    finally:
        if cutter:
            cutter.join()
        camera.kill()
    assert frames[0].image.shape == (120, 160, 3)
    assert source.stats.drops >= 1 and source.stats.reconnects >= 1, source.stats
    times = [f.position for f in frames]
    assert max(b - a for a, b in zip(times, times[1:])) >= 1.0  # the cut, seen as a gap
    assert times[-1] - times[0] >= 4  # frames before and after it
