"""Frame sources for `cvpipe video`: a video file, an image folder played as a stream, a webcam, an RTSP/HTTP URL.

Files and folders give every frame (or every `stride`-th), decoded one step ahead on a thread. Live sources
(webcams, URLs) are read by a capture thread that keeps only the latest frame, so a slow model skips frames
instead of falling behind real time; a stream that drops is reopened with exponential back-off until
`reconnect_timeout` seconds pass without a frame. OpenCV (its FFmpeg backend) opens and decodes everything.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from cvpipe.errors import CvpipeError, DataError
from cvpipe.io.images import IMAGE_SUFFIXES, PER_FILE_ERRORS, failure_reason, list_images, read_image
from cvpipe.io.prefetch import Prefetch
from cvpipe.numbers import parse_int
from cvpipe.paths import data_dir, find_data

LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
OPEN_TIMEOUT_MS = 5000  # FFmpeg's own defaults wait far longer on a dead RTSP server
READ_TIMEOUT_MS = 5000
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0  # seconds between reconnection attempts, doubling


@dataclass
class Frame:
    index: int  # frame number in the source (a file's own numbering; live: frames captured so far)
    image: np.ndarray  # HWC uint8 RGB
    position: float  # seconds into the stream
    captured: float  # time.perf_counter() when it was decoded: latency is measured from here
    name: str = ""  # an image folder's file name


@dataclass
class SourceStats:
    """What a source saw; printed in the run's summary."""

    read: int = 0  # frames decoded
    skipped_live: int = 0  # live frames replaced by a newer one before the model took them
    drops: int = 0  # times a live stream was lost
    reconnects: int = 0  # times it came back
    bad_files: list[tuple[str, str]] = field(default_factory=list)  # an image folder's unreadable files
    ended: str = ""  # why the source ended, when not at its natural end


class Source(ABC):
    """An iterator of `Frame`s with `fps`, `live`, `name` and `stats`; `close()` releases it. Iterating decodes
    `frames()` on a thread one step ahead (a live source overrides this: it has its own capture thread)."""

    fps: float
    live: bool
    name: str
    stride: int = 1  # files and folders: one frame in `stride` is read

    def __init__(self) -> None:
        self.stats = SourceStats()
        self.prefetch: Prefetch | None = None

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """The source's frames in order, decoded in the calling thread."""

    def __iter__(self) -> Iterator[Frame]:
        self.prefetch = Prefetch(self.frames())
        return iter(self.prefetch)

    @property
    def length(self) -> int | None:
        """How many frames it will give (files and folders, after `stride`), or None (live, or unknown)."""
        return None

    def close(self) -> None:
        if self.prefetch is not None:
            self.prefetch.stop()


def open_source(source: str | int, *, stride: int = 1, fps: float | None = None,
                reconnect_timeout: float = 30.0) -> Source:
    """A source from the command line: an integer is a webcam, a URL a live stream, a folder an image stream."""
    text = str(source)
    if stride < 1:
        raise CvpipeError(f"--stride: expected an integer ≥ 1, got {stride}")
    index = webcam_index(text)
    if index is not None:
        return LiveSource(index, f"camera {index}", reconnect_timeout)
    if text.lower().startswith(LIVE_SCHEMES):
        return LiveSource(text, text, reconnect_timeout)
    path = find_data(text)
    if path.is_dir():
        return FolderSource(path, stride=stride, fps=fps or 25.0)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise CvpipeError(f"--source {path}: one image is not a stream; use `cvpipe predict` (or a folder)")
        return FileSource(path, stride=stride)
    raise CvpipeError(f"--source {text}: no such file or folder (here or in the data folder {data_dir()}), and not "
                      f"a webcam index or a URL ({', '.join(s.rstrip(':/') for s in LIVE_SCHEMES)})")


MAX_WEBCAM_INDEX = 9999  # OpenCV takes a C int; /dev/video indices are small


def webcam_index(source: str) -> int | None:
    """A webcam index for a source written as digits (of any script, so that '²' is refused by name rather than
    read as a file), else None. Digits that are not a plain 0..9999 raise CvpipeError."""
    text = str(source).strip()
    if not text.isdigit():
        return None
    try:
        if Path(text).exists():  # a file named 0 in this folder
            return None
    except OSError:  # a name too long to be a file
        pass
    return parse_int(text, "--source: a webcam index", 0, MAX_WEBCAM_INDEX)


def _capture(target: Path | str | int) -> cv2.VideoCapture:
    """OpenCV's FFmpeg backend with bounded open/read timeouts; RTSP over TCP unless the user chose otherwise
    (UDP loses packets under load and smears the picture)."""
    if isinstance(target, str) and target.lower().startswith("rtsp"):
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    if not isinstance(target, Path):  # a live source: its drops are counted and reported, not logged by OpenCV
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own messages: none
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
    if isinstance(target, int):
        return cv2.VideoCapture(target, cv2.CAP_ANY, params)
    return cv2.VideoCapture(str(target), cv2.CAP_FFMPEG, params)


class FileSource(Source):
    live = False

    def __init__(self, path: Path, *, stride: int = 1):
        super().__init__()
        self.path, self.stride, self.name = path, stride, str(path)
        self.capture = _capture(path)
        if not self.capture.isOpened():
            raise DataError(f"{path}: OpenCV cannot open this video (not a video, or a codec its FFmpeg lacks); "
                            "re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 25.0
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    @property
    def length(self) -> int | None:
        return -(-self.frame_count // self.stride) if self.frame_count else None

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            if index % self.stride:
                ok = self.capture.grab()  # skipped frames are not converted to RGB
            else:
                ok, bgr = self.capture.read()
                if ok:
                    self.stats.read += 1
                    yield Frame(index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), index / self.fps, time.perf_counter())
            if not ok:
                break
            index += 1
        if self.frame_count and index < self.frame_count - 1:
            self.stats.ended = f"the file ended at frame {index} of the {self.frame_count} its header announces"

    def close(self) -> None:
        super().close()
        self.capture.release()


class FolderSource(Source):
    """The images under a folder (recursive, sorted by name) as frames at `fps`; an unreadable file is
    reported in `stats.bad_files` and skipped."""

    live = False

    def __init__(self, root: Path, *, stride: int = 1, fps: float = 25.0):
        super().__init__()
        self.root, self.fps, self.name = root, fps, str(root)
        files = list_images(root)
        if not files:
            raise CvpipeError(f"--source {root}: the folder has no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.files = files[::stride]
        self.stride = stride

    @property
    def length(self) -> int | None:
        return len(self.files)

    def frames(self) -> Iterator[Frame]:
        for k, path in enumerate(self.files):
            name = str(path.relative_to(self.root))
            try:
                image = read_image(path)
            except PER_FILE_ERRORS as e:
                self.stats.bad_files.append((name, failure_reason(path, e)))
                continue
            self.stats.read += 1
            index = k * self.stride
            yield Frame(index, image, index / self.fps, time.perf_counter(), name=name)


class LiveSource(Source):
    """A webcam or a network stream read by a capture thread that keeps only the newest frame."""

    live = True

    def __init__(self, target: str | int, name: str, reconnect_timeout: float):
        super().__init__()
        self.target, self.name, self.reconnect_timeout = target, name, reconnect_timeout
        self.capture = _capture(target)
        if not self.capture.isOpened():
            self.capture.release()
            what = "the camera is missing or busy" if isinstance(target, int) else \
                "nothing answers at that address, or the stream's format is not one FFmpeg reads"
            raise DataError(f"--source {name}: cannot open ({what}); check it plays in `ffplay {name}`")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 25.0
        if not 1 <= self.fps <= 240:  # network streams report 0, 1000 or 90000 when they don't know
            self.fps = 25.0
        self._latest: Frame | None = None
        self._finished = False
        self._stop = threading.Event()
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="cvpipe-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        index, start = 0, time.perf_counter()
        while not self._stop.is_set():
            ok, bgr = self.capture.read()
            if ok:
                frame = Frame(index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.perf_counter() - start,
                              time.perf_counter())
                index += 1
                with self._new:
                    self.stats.read += 1
                    if self._latest is not None:
                        self.stats.skipped_live += 1
                    self._latest = frame
                    self._new.notify()
            elif not self._reconnect():
                break
        with self._new:
            self._finished = True
            self._new.notify()

    def _reconnect(self) -> bool:
        """Reopen with back-off; False once `reconnect_timeout` seconds pass without a frame."""
        self.stats.drops += 1
        self.capture.release()
        lost_at, wait = time.perf_counter(), BACKOFF_FIRST
        while not self._stop.is_set():
            remaining = self.reconnect_timeout - (time.perf_counter() - lost_at)
            if remaining <= 0:
                self.stats.ended = f"the stream dropped and did not come back within {self.reconnect_timeout:g} s"
                return False
            if self._stop.wait(min(wait, remaining)):
                return False
            wait = min(wait * 2, BACKOFF_MAX)
            self.capture = _capture(self.target)
            if self.capture.isOpened():
                self.stats.reconnects += 1
                return True
            self.capture.release()
        return False

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()  # the capture thread already runs ahead; a prefetch queue would only add lag

    def frames(self) -> Iterator[Frame]:
        while True:
            with self._new:
                while self._latest is None and not self._finished:
                    self._new.wait()
                if self._latest is None:
                    return
                frame, self._latest = self._latest, None
            yield frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=READ_TIMEOUT_MS / 1000 + 1)
        if not self._thread.is_alive():  # never release a capture another thread is blocked reading
            self.capture.release()


class StreamMux:
    """Frames of several sources for one model pass. Each source is read on its own thread into a slot: a live
    source's slot keeps only its newest frame, a file's or folder's holds the next few in order, so files give
    every frame and a stream that drops (and waits to reconnect) never holds up the others. Each step of the
    iteration gives one frame of every file that has not ended and the newest of every live source that has one,
    as (source index, frame), after waiting for at least one; it ends once every source has ended. `stop(k)` stops
    reading source k. With `realtime`, files and folders play no faster than their frame rate, as a camera would
    give them (for a page or window someone watches): each frame is released when it is due, and its latency
    counts from then."""

    FILE_AHEAD = 1  # frames a file's slot holds (its Prefetch decodes two more ahead)

    def __init__(self, sources: list[Source], *, realtime: bool = False):
        self.sources, self.realtime = sources, realtime
        self.slots: list[list[Frame]] = [[] for _ in sources]
        self.ended = [False] * len(sources)
        self.errors: list[Exception] = []
        self.changed = threading.Condition()
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._pump, args=(k,), name=f"cvpipe-stream-{k}", daemon=True)
                        for k in range(len(sources))]
        for thread in self.threads:
            thread.start()

    def _pump(self, k: int) -> None:
        source, slot = self.sources[k], self.slots[k]
        paced = self.realtime and not source.live
        try:
            started = time.perf_counter()
            for frame in source:
                if paced:
                    if self.halt.wait(max(0.0, started + frame.position - time.perf_counter())):
                        return
                    frame.captured = time.perf_counter()
                with self.changed:
                    while not source.live and len(slot) >= self.FILE_AHEAD and not self.halt.is_set():
                        self.changed.wait(0.1)
                    if self.halt.is_set() or self.ended[k]:
                        return
                    if source.live and slot:  # the model has not taken the last one: the newest replaces it
                        slot.clear()
                        source.stats.skipped_live += 1
                    slot.append(frame)
                    self.changed.notify_all()
        except Exception as e:  # raised in the consumer, with its source's name
            with self.changed:
                self.errors.append(e)
        finally:
            with self.changed:
                self.ended[k] = True
                self.changed.notify_all()

    def __iter__(self) -> Iterator[list[tuple[int, Frame]]]:
        while True:
            with self.changed:
                while not self._ready():
                    self.changed.wait()
                if self.errors:
                    raise self.errors[0]
                ready = [(k, slot.pop(0)) for k, slot in enumerate(self.slots) if slot]
                self.changed.notify_all()  # a file's reader waits for room
            if not ready:
                return
            yield ready

    def _ready(self) -> bool:
        if self.errors or all(self.ended):
            return True
        file_behind = any(not source.live and not self.ended[k] and not self.slots[k]
                          for k, source in enumerate(self.sources))  # a file is read in a moment: wait for it
        return any(self.slots) and not file_behind

    def stop(self, k: int) -> None:
        """No more frames from source k (it reached --max-frames): its slot is emptied and no longer filled."""
        with self.changed:
            self.ended[k] = True
            self.slots[k].clear()
            self.changed.notify_all()

    def close(self) -> None:
        self.halt.set()
        with self.changed:
            self.changed.notify_all()
        for source in self.sources:
            source.close()
        for thread in self.threads:
            thread.join(timeout=READ_TIMEOUT_MS / 1000 + 1)
