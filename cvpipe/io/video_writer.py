"""An MP4 written by OpenCV's VideoWriter under a temporary name and moved into place when closed, so a
reader never sees a half-written file and an interrupted run still leaves the frames it wrote."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from cvpipe.errors import CvpipeError
from cvpipe.paths import part_path

FOURCC = "mp4v"  # MPEG-4 Part 2: the MP4 codec every OpenCV wheel can encode (its FFmpeg has no H.264 encoder)


class VideoWriter:
    def __init__(self, path: Path, fps: float):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".m4v", ".mov"):
            raise CvpipeError(f"--out {path}: write an .mp4 (OpenCV encodes {FOURCC} into MP4/MOV)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = part_path(self.path, keep_suffix=True)  # the suffix picks the container
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, image_rgb: np.ndarray, copies: int = 1) -> None:
        if self.writer is None:  # the size is the first frame's
            h, w = image_rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*FOURCC), self.fps, (w, h))
            if not self.writer.isOpened():
                raise CvpipeError(f"{self.path}: OpenCV cannot open a {FOURCC} writer here")
            self.size = (w, h)
        if (image_rgb.shape[1], image_rgb.shape[0]) != self.size:  # a stream that changed resolution on reconnect
            image_rgb = cv2.resize(image_rgb, self.size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
        for _ in range(copies):
            self.writer.write(bgr)
        self.frames += copies

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            os.replace(self.tmp, self.path)
            self.writer = None
