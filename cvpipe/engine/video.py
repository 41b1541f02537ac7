"""`cvpipe video`: a pipeline over video files, image folders, webcams or RTSP/HTTP streams, one or several.

Each frame goes through the pipeline's task (tasks/: detection, with optional tracking and counting;
segmentation; classification; style transfer), gets an overlay with the processing FPS and the
capture-to-display latency, and is written to an MP4, shown in a window or a local web page (io/live_view.py),
and logged as one JSON line. Each live stream is read by a capture thread that keeps only its newest frame
(io/streams.py), so the latency stays bounded however slow the model is; with several sources, the frames ready
at once go to the model in one call (`Task.frames`), and each stream keeps its own tracker, counts and files.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import cv2
import numpy as np
import torch
from rich.console import Console

from cvpipe.config import PipelineConfig
from cvpipe.console import make_console
from cvpipe.data.augment import augment_image, build_augment
from cvpipe.data.samples import image_tensor
from cvpipe.engine.progress import LoggedProgress
from cvpipe.engine.runtime import inference_model
from cvpipe.errors import ConfigError
from cvpipe.io.images import write_text
from cvpipe.io.outputs import prepare_file
from cvpipe.io.streams import Frame, Source, SourceStats, StreamMux, open_source, webcam_index
from cvpipe.io.video_writer import VideoWriter
from cvpipe.ops.device import resolve_device
from cvpipe.ops.threshold import resolve_conf
from cvpipe.tasks import get_task
from cvpipe.tasks.base import FrameJob

WINDOW = "cvpipe video (q quits)"
VIDEO_LOG_EVERY_S = 5.0  # off a terminal, a progress line per stream this often (a log shows the run is alive)


@dataclass
class VideoReport:
    source: str
    live: bool
    out: Path | None
    jsonl: Path | None
    frames: int = 0  # processed
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # capture → frame shown/written
    waits_ms: list[float] = field(default_factory=list)  # capture → the model takes the frame: a queue shows here
    track_ids: set[int] = field(default_factory=set)
    stats: SourceStats = field(default_factory=SourceStats)
    stopped: str = "end of source"
    counts: dict = field(default_factory=dict)  # video.lines / video.zones: ops.counting.Counting.summary()

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def latency(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else 0.0

    def wait(self, q: float) -> float:
        return float(np.percentile(self.waits_ms, q)) if self.waits_ms else 0.0

    def as_json(self) -> dict:
        return {"source": self.source, "live": self.live, "frames": self.frames, "seconds": round(self.seconds, 3),
                "fps": round(self.fps, 3), "latency_ms_median": round(self.latency(50), 2),
                "latency_ms_p95": round(self.latency(95), 2), "wait_ms_median": round(self.wait(50), 2),
                "wait_ms_p95": round(self.wait(95), 2), "frames_read": self.stats.read,
                "frames_skipped_live": self.stats.skipped_live, "drops": self.stats.drops,
                "reconnects": self.stats.reconnects, "tracks": len(self.track_ids),
                "bad_files": [list(b) for b in self.stats.bad_files], "stopped": self.stopped,
                "source_note": self.stats.ended, "out": str(self.out) if self.out else None, **self.counts,
                "latencies_ms": [round(v, 2) for v in self.latencies_ms]}


class FrameTask:
    """Frames through the pipeline's task (tasks/): for each, (picture to show, its JSON-line fields). One model
    call takes the frames of several streams; each stream has its own `FrameJob` (tracker, counting)."""

    def __init__(self, config: PipelineConfig, model, classes: list[str], device: torch.device, *,
                 conf: float | None):
        self.config, self.model, self.classes, self.device, self.conf = config, model, classes, device, conf
        self.task = get_task(config.task)
        self.transform = build_augment(config.augment, "eval") if self.task.eval_transform else None
        self.tracks = config.video.track or config.video.counts  # counting follows tracked objects (a task without
        # boxes refuses both when the pipeline loads: Task.settle)

    def job(self, fps: float) -> FrameJob:
        """A stream's own state: its tracker and its counts."""
        tracker = counting = None
        if self.tracks:
            from cvpipe.ops.tracking import Tracker

            video = self.config.video
            tracker = Tracker(conf=self.conf, fps=fps, buffer=video.track_buffer, match=video.track_match)
        if self.config.video.counts:
            from cvpipe.ops.counting import Counting

            counting = Counting(self.config.video, self.classes)
        return FrameJob(self.config, self.device, self.classes, self.conf, tracker, counting)

    def __call__(self, images: list[np.ndarray], jobs: list[FrameJob]) -> list[tuple[np.ndarray, dict]]:
        if self.transform is not None:
            images = [augment_image(self.transform, image) for image in images]
        return self.task.frames(self.model, images, [image_tensor(image) for image in images], jobs)


def draw_status(image: np.ndarray, fps: float, latency_ms: float) -> np.ndarray:
    """FPS and capture-to-display latency in the top-left corner, on a dark band so they read on any picture."""
    text = f"{fps:5.1f} FPS  latency {latency_ms:4.0f} ms"
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(image, (0, 0), (w + 10, h + base + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (5, h + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def _check_display() -> None:
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise ConfigError("--show: this OpenCV has no window support (opencv-python-headless, the build "
                          "albumentations uses) or there is no display; use --serve PORT to watch in a browser, or "
                          "write --out and play the MP4") from None


def stream_name(source: str) -> str:
    """How the page names a source: `camera N` for a webcam index, else as given."""
    index = webcam_index(source)
    return source if index is None else f"camera {index}"


def stream_stem(source: str) -> str:
    """A file name for a source's outputs: a file's stem, `camera0`, or a URL's host, port and path."""
    index = webcam_index(source)
    if index is not None:
        return f"camera{index}"
    if "://" in source:
        return re.sub(r"[^A-Za-z0-9.-]+", "_", source.split("://", 1)[1]).strip("_") or "stream"
    return Path(source).stem or "stream"


def unique_stems(sources: list[str]) -> list[str]:
    """Each source's output name, made unique before any file opens (`a/x.mp4`, `b/x.mp4` and `x_2.mp4` become
    x, x_2 and x_2_2), compared without case: a case-insensitive file system would merge X and x."""
    taken: set[str] = set()
    stems = []
    for source in sources:
        stem = name = stream_stem(source)
        n = 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}_{n}"
        taken.add(name.lower())
        stems.append(name)
    return stems


@dataclass
class StreamRun:
    """One source in a run: what it reports, its task state, where it writes, and its own FPS meter."""

    source: Source
    report: VideoReport
    job: FrameJob
    writer: VideoWriter | None
    log: IO | None
    out_fps: float
    window: str
    last_position: float | None = None
    last_done: float = 0.0
    fps: float = 0.0  # smoothed processing rate
    bar: int = 0  # its progress task

    def done(self, frame: Frame, shown: np.ndarray, record: dict, wait_ms: float) -> float:
        """Account for one processed frame: overlay, MP4, JSON line; returns its latency in ms."""
        now = time.perf_counter()
        if self.last_done:
            gap = max(now - self.last_done, 1e-6)
            self.fps = 1 / gap if not self.fps else 0.9 * self.fps + 0.1 / gap
        self.last_done = now
        latency_ms = (now - frame.captured) * 1000
        draw_status(shown, self.fps, latency_ms)
        if self.writer:
            self.writer.write(shown, _copies(frame, self.last_position, self.out_fps) if self.source.live else 1)
        self.last_position = frame.position
        report = self.report
        report.frames += 1
        report.latencies_ms.append(latency_ms)
        report.waits_ms.append(wait_ms)
        report.track_ids.update(record.get("track_id", []))
        if self.log:
            self.log.write(json.dumps(_line(frame, latency_ms, wait_ms, record)) + "\n")
            self.log.flush()
        return latency_ms

    def figures(self, frame: Frame, record: dict, latency_ms: float, boxes: bool) -> dict:
        """What the live page shows for this stream."""
        stats = self.report.stats
        state = ("reconnecting" if stats.drops > stats.reconnects else "live") if self.source.live else "playing"
        figures = {"fps": self.fps, "latency_ms": latency_ms, "frame": frame.index,
                   "health": {"state": state, "read": stats.read, "skipped": stats.skipped_live,
                              "drops": stats.drops, "reconnects": stats.reconnects}}
        if boxes:
            figures["objects"] = dict(sorted(Counter(record.get("labels", [])).items()))
        return figures | {k: record[k] for k in ("lines", "zones") if k in record}

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.log:
            self.log.close()
        if self.job.counting is not None:
            self.report.counts = self.job.counting.summary()
        if self.report.out:
            out = self.report.out
            write_text(out.with_name(f"{out.stem}.summary.json"), json.dumps(self.report.as_json(), indent=1))


@dataclass(frozen=True)
class VideoOptions:
    """How a video run goes, beside its pipeline, sources and outputs (`cvpipe video`'s options)."""

    jsonl: Path | None = None  # the JSON lines of a single source (default: beside its MP4)
    show: bool = False  # an OpenCV window per source (q stops)
    serve: str | None = None  # [HOST:]PORT of the live page; when the sources end by themselves it stays up
    stride: int = 1  # files: every stride-th frame
    conf: float | str | None = None  # ops/threshold.resolve_conf: a number, auto, or None (carried, else default)
    backend: str = "auto"
    max_frames: int | None = None  # per source
    duration: float | None = None  # seconds, all sources together
    folder_fps: float | None = None  # the frame rate an image folder plays at


def run_video(config: PipelineConfig, sources: list[str], weights: Path | None, *, outs: list[Path | None],
              options: VideoOptions = VideoOptions(), console: Console | None = None) -> list[VideoReport]:
    """Every source through the pipeline, together; one report per source. `outs[k]` is source k's MP4 (its JSON
    lines and summary go beside it)."""
    console = console or make_console()
    jsonl, show, serve, stride, conf, backend = (options.jsonl, options.show, options.serve, options.stride,
                                                 options.conf, options.backend)
    max_frames, duration, folder_fps = options.max_frames, options.duration, options.folder_fps
    if jsonl is not None and len(sources) > 1:
        raise ConfigError("--jsonl names one file: with several sources each one's JSON lines go beside its MP4")
    logs = [jsonl if jsonl is not None else (out.with_suffix(".jsonl") if out else None) for out in outs]
    for paths, what in ((outs, "--out"), (logs, "--jsonl")):  # before the model loads
        for path in paths:
            if path is not None:
                prepare_file(path, what)
    device = resolve_device(config.train.device)
    model, classes, backend, why = inference_model(config, weights, device, backend)
    conf, conf_source = resolve_conf(conf, weights) if get_task(config.task).thresholded else (None, "")
    task = FrameTask(config, model, classes, device, conf=conf)
    if show:
        _check_display()
    view = None
    if serve is not None:  # before the sources open: a busy port fails with nothing to undo
        from cvpipe.io.live_view import LiveView

        view = LiveView(serve, [stream_name(source) for source in sources])
    opened: list[Source] = []
    try:
        for source in sources:
            opened.append(open_source(source, stride=stride, fps=folder_fps,
                                      reconnect_timeout=config.video.reconnect_timeout))
    except BaseException:
        for stream in opened:
            stream.close()
        if view is not None:
            view.close()
        raise
    runs = []
    for k, (source, stream, out, log) in enumerate(zip(sources, opened, outs, logs)):
        out_fps = stream.fps / stream.stride
        runs.append(StreamRun(stream, VideoReport(str(source), stream.live, out, log, stats=stream.stats),
                              task.job(out_fps), VideoWriter(out, out_fps) if out else None,
                              open(log, "w", encoding="utf-8") if log else None,  # flushed line by line
                              out_fps, WINDOW if len(sources) == 1 else f"{WINDOW} [{k}]"))
        console.print(f"video: {stream.name} ({'live, newest frame first' if stream.live else f'{stream.fps:g} fps'}"
                      f"{f', one frame in {stride}' if stride > 1 and not stream.live else ''}) → "
                      f"{out or 'no file'}{' + window' if show else ''}")
    console.print(f"backend: {backend} ({why})" + (f"; conf {conf:g} ({conf_source})" if conf is not None else ""))
    if view is not None:
        console.print(f"live view: {view.url}")
    mux = StreamMux(opened, realtime=show or view is not None)  # someone watches: files play at their pace
    start = time.perf_counter()
    try:
        # progress: a live bar on a terminal; in a log, a plain line per stream every VIDEO_LOG_EVERY_S seconds
        with LoggedProgress(console, log_every=VIDEO_LOG_EVERY_S) as progress:
            for run in runs:
                run.bar = progress.add_task(run.source.name, total=run.source.length, info="")
            _loop(mux, runs, task, view, show, max_frames, duration, start, progress)
    except KeyboardInterrupt:
        for run in runs:
            run.report.stopped = "interrupted"
    finally:
        seconds = time.perf_counter() - start
        mux.close()
        for run in runs:
            run.report.seconds = seconds
            run.close()
            if show:
                cv2.destroyWindow(run.window)
    if view is not None:
        _linger(view, [run.report for run in runs], console)
    return [run.report for run in runs]


def _loop(mux: StreamMux, runs: list[StreamRun], task: FrameTask, view, show: bool, max_frames: int | None,
          duration: float | None, start: float, progress: LoggedProgress) -> None:
    for ready in mux:
        taken = [(k, frame, (time.perf_counter() - frame.captured) * 1000) for k, frame in ready]
        results = task([frame.image for _, frame, _ in taken], [runs[k].job for k, _, _ in taken])
        for (k, frame, wait_ms), (shown, record) in zip(taken, results):
            run = runs[k]
            latency_ms = run.done(frame, shown, record, wait_ms)
            progress.update(run.bar, advance=1, info=f"{run.fps:.1f} FPS, latency {latency_ms:.0f} ms")
            if view is not None:
                view.publish(k, shown, run.figures(frame, record, latency_ms, task.task.tracks))
            if show:
                cv2.imshow(run.window, cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    for other in runs:
                        other.report.stopped = "q pressed"
                    return
            if max_frames is not None and run.report.frames >= max_frames:
                run.report.stopped = f"--max-frames {max_frames}"
                mux.stop(k)
        if duration is not None and time.perf_counter() - start >= duration:
            for run in runs:
                run.report.stopped = f"--duration {duration:g} s"
            return


def _linger(view, reports: list[VideoReport], console: Console) -> None:
    """Sources that ended by themselves (a file's end) leave the page up, showing their last frame and figures,
    until Ctrl-C; a run stopped by a limit, q or Ctrl-C closes it at once."""
    try:
        if all(report.stopped == "end of source" for report in reports):
            view.ended()
            console.print(f"the sources ended; the page stays up at {view.url} until Ctrl-C")
            while not view.closing.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        view.close()


def _copies(frame: Frame, last_position: float | None, fps: float) -> int:
    """How many times a live frame is written so that the MP4 plays in real time: the model's pace is not the
    stream's. At most one second's worth, so a long reconnection shows as a short freeze."""
    if last_position is None:
        return 1
    return int(min(max(round((frame.position - last_position) * fps), 1), max(fps, 1)))


def _line(frame: Frame, latency_ms: float, wait_ms: float, record: dict) -> dict:
    line = {"frame": frame.index, "time": round(frame.position, 3), "latency_ms": round(latency_ms, 1),
            "wait_ms": round(wait_ms, 1)}
    if frame.name:
        line["file"] = frame.name
    return line | record
