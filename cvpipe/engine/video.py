"""`cvpipe video`: a pipeline over a video file, an image folder, a webcam or an RTSP/HTTP stream.

Each frame goes through the pipeline's task (tasks/: detection, with optional tracking; segmentation;
classification; style transfer), gets an overlay with the processing FPS and the capture-to-display latency, and is written to
an MP4, shown in a window, and logged as one JSON line. A live stream is read by a capture thread that keeps
only the newest frame (io/streams.py), so the latency stays bounded however slow the model is.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console

from cvpipe.config import PipelineConfig
from cvpipe.console import make_console
from cvpipe.data.augment import augment_image, build_augment
from cvpipe.data.samples import image_tensor
from cvpipe.engine.device import resolve_device
from cvpipe.engine.runtime import inference_model
from cvpipe.errors import ConfigError
from cvpipe.io.images import write_text
from cvpipe.io.outputs import prepare_file
from cvpipe.io.streams import Frame, Source, SourceStats, open_source
from cvpipe.io.video_writer import VideoWriter
from cvpipe.tasks import get_task
from cvpipe.tasks.base import FrameJob

WINDOW = "cvpipe video (q quits)"


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
                "source_note": self.stats.ended, "out": str(self.out) if self.out else None,
                "latencies_ms": [round(v, 2) for v in self.latencies_ms]}


class FrameTask:
    """One frame through the pipeline's task (tasks/): (picture to show, its JSON-line fields)."""

    def __init__(self, config: PipelineConfig, model, classes: list[str], device: torch.device, *, conf: float,
                 fps: float):
        self.task, self.model = get_task(config.task), model
        self.transform = build_augment(config.augment, "eval") if self.task.eval_transform else None
        tracker = None
        if config.video.track:
            if not self.task.tracks:
                raise ConfigError(f"video.track: tracking follows detected boxes; task {config.task!r} has none")
            from cvpipe.engine.tracking import Tracker

            tracker = Tracker(conf=conf, fps=fps, buffer=config.video.track_buffer, match=config.video.track_match)
        self.job = FrameJob(config, device, classes, conf, tracker)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        if self.transform is not None:
            image = augment_image(self.transform, image)
        return self.task.frame(self.model, image, image_tensor(image), self.job)


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
                          "albumentations uses) or there is no display; write --out and play the MP4 instead") from None


def run_video(config: PipelineConfig, source: str, weights: Path | None, *, out: Path | None,
              jsonl: Path | None = None, show: bool = False, stride: int = 1, conf: float = 0.25,
              backend: str = "auto", max_frames: int | None = None, duration: float | None = None,
              folder_fps: float | None = None, console: Console | None = None) -> VideoReport:
    console = console or make_console()
    jsonl = jsonl if jsonl is not None else (out.with_suffix(".jsonl") if out else None)
    for path, what in ((out, "--out"), (jsonl, "--jsonl")):  # before the model loads
        if path is not None:
            prepare_file(path, what)
    device = resolve_device(config.train.device)
    model, classes, backend, why = inference_model(config, weights, device, backend)
    if show:
        _check_display()
    stream: Source = open_source(source, stride=stride, fps=folder_fps,
                                 reconnect_timeout=config.video.reconnect_timeout)
    out_fps = stream.fps / stream.stride
    task = FrameTask(config, model, classes, device, conf=conf, fps=out_fps)
    writer = VideoWriter(out, out_fps) if out else None
    report = VideoReport(str(source), stream.live, out, jsonl, stats=stream.stats)
    console.print(f"video: {stream.name} ({'live, newest frame first' if stream.live else f'{stream.fps:g} fps'}"
                  f"{f', one frame in {stride}' if stride > 1 and not stream.live else ''}) → "
                  f"{out or 'no file'}{' + window' if show else ''}")
    console.print(f"backend: {backend} ({why})")
    log = None
    if jsonl:
        log = open(jsonl, "w", encoding="utf-8")  # a log: one complete line per frame, flushed as it goes
    start = last_done = time.perf_counter()
    last_position, smoothed_fps = None, 0.0
    try:
        for frame in stream:
            wait_ms = (time.perf_counter() - frame.captured) * 1000
            shown, record = task(frame.image)
            now = time.perf_counter()
            gap = now - last_done
            smoothed_fps = 1 / gap if not smoothed_fps else 0.9 * smoothed_fps + 0.1 / max(gap, 1e-6)
            last_done = now
            latency_ms = (now - frame.captured) * 1000
            draw_status(shown, smoothed_fps, latency_ms)
            if writer:
                writer.write(shown, _copies(frame, last_position, out_fps) if stream.live else 1)
            last_position = frame.position
            if show:
                cv2.imshow(WINDOW, cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    report.stopped = "q pressed"
                    break
            report.frames += 1
            report.latencies_ms.append(latency_ms)
            report.waits_ms.append(wait_ms)
            report.track_ids.update(record.get("track_id", []))
            if log:
                log.write(json.dumps(_line(frame, latency_ms, wait_ms, record)) + "\n")
                log.flush()
            if max_frames is not None and report.frames >= max_frames:
                report.stopped = f"--max-frames {max_frames}"
                break
            if duration is not None and now - start >= duration:
                report.stopped = f"--duration {duration:g} s"
                break
    except KeyboardInterrupt:
        report.stopped = "interrupted"
    finally:
        report.seconds = time.perf_counter() - start
        stream.close()
        if writer:
            writer.close()
        if log:
            log.close()
        if show:
            cv2.destroyWindow(WINDOW)
    if out:
        write_text(out.with_name(f"{out.stem}.summary.json"), json.dumps(report.as_json(), indent=1))
    return report


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
