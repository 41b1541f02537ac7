"""Image decode and encode with OpenCV: RGB uint8 inside, BGR only at the file boundary; atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from cvpipe.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(folder: Path) -> list[Path]:
    """The image files under `folder`, recursively, sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image(path: Path) -> np.ndarray:
    """HWC uint8 RGB. A missing or undecodable file raises DataError naming it."""
    try:
        buf = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode copes with non-ASCII paths
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.strerror or e})") from None
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None:
        raise DataError(f"{path}: not a decodable image (corrupt, truncated or another format); remove or re-export it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path: Path, image_rgb: np.ndarray) -> None:
    """Encode by the file's suffix and replace `path` atomically. A 2-D array is written as one grey channel
    (label masks keep their class indices)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = image_rgb if image_rgb.ndim == 2 else cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(path.suffix or ".png", pixels)
    if not ok:
        raise DataError(f"{path}: OpenCV cannot encode an image with suffix {path.suffix!r}")
    tmp = path.with_name(f".{path.name}.part")
    encoded.tofile(tmp)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` atomically: a reader sees the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only; DataError if the file is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read image header ({e})") from None
