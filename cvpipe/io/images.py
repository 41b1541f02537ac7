"""Image decode and encode with OpenCV: RGB uint8 inside, BGR only at the file boundary; atomic writes.

Every way one image can fail to decode (unreadable file, corrupt data, OpenCV's pixel limit or another decoder
assertion, no memory for it) comes out of `read_image` as one DataError naming the file, so a folder run reports
and skips that file whatever the cause.
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from cvpipe.errors import CvpipeError, DataError
from cvpipe.paths import atomic_path, data_dir, find_data

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# OpenCV refuses to decode an image of more pixels than this, whatever memory there is; the header reader
# (PIL) is held to the same limit, so both agree on what is too large.
MAX_IMAGE_PIXELS = int(os.environ.get("CV_IO_MAX_IMAGE_PIXELS", 1 << 30))
MIN_IMAGE_SIDE = 4  # pixels: a thinner image (a 1×N strip) has nothing to find, and resizing it cannot keep its shape


# What one file's decode or per-file transform can raise; a folder run reports these per file and goes on.
PER_FILE_ERRORS = (DataError, cv2.error, ValueError, MemoryError)


def failure_reason(path: Path | str, error: BaseException) -> str:
    """Why a per-file step failed on `path`, without the path (the report names the file once)."""
    text = str(error).removeprefix(f"{path}: ") if isinstance(error, DataError) else \
        f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    return text or type(error).__name__


def list_images(folder: Path) -> list[Path]:
    """The image files under `folder`, recursively, sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def discover(source: str | Path | list[Path], *, exclude: Path | None = None) -> tuple[list[Path], Path]:
    """Image files under a folder (recursive), a single file, a glob, or a list of files (a dataset split's, as
    given); plus the root names are relative to. Files under `exclude` (a command's output folder inside its
    source) are left out, so a second run never reads the first one's annotated copies as input."""
    if isinstance(source, list):
        if not source:
            raise CvpipeError("no image files to run on")
        files = [Path(p).resolve() for p in source]
        return files, Path(os.path.commonpath([f.parent for f in files]))
    path = find_data(source)
    if path.is_dir():
        files, root = list_images(path), path
    elif path.is_file():
        files, root = [path], path.parent
    elif glob.has_magic(str(source)):
        files = sorted(Path(p) for p in glob.glob(str(source), recursive=True)
                       if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file())
        if not files:
            raise CvpipeError(f"--source {source}: the pattern matches no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
        root = Path(os.path.commonpath([f.parent for f in files]))
    else:
        raise CvpipeError(f"--source {source}: no such file or folder, here or in the data folder {data_dir()} "
                          "(`cvpipe data fetch` lists what it can put there)")
    found = len(files)
    if exclude is not None:
        skip = Path(exclude).resolve()
        files = [f for f in files if not f.resolve().is_relative_to(skip)]
    if not files:
        raise CvpipeError(f"--source {source}: no image files in it ({', '.join(sorted(IMAGE_SUFFIXES))}, searched "
                          "recursively" + (f"; the {found} under {exclude}, the output folder, are left out)"
                                           if found else ")"))
    return files, root


def image_name(path: str | Path, root: str | Path) -> str:
    """An image's name in a run's results: its path under the source folder `discover` returned, else its file
    name (a file given alone); printable (`shown_name`)."""
    path = Path(path)
    return shown_name(str(path.relative_to(root)) if path.is_relative_to(root) else path.name)


def shown_name(name: str) -> str:
    """A file name as UTF-8 text: bytes that are not UTF-8 (Python keeps them as surrogates) become `\\xNN`, so
    the name can go into JSON, CSV and the console."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(text: str) -> str:
    """`text` with its line breaks escaped, for line-per-entry files (skipped.txt) that a name must not forge."""
    return text.replace("\n", "\\n").replace("\r", "\\r")


def write_skipped(path: Path, lines: Iterable[str]) -> None:
    """skipped.txt: one line per skipped file, whatever its name holds."""
    write_text(path, "".join(f"{one_line(line)}\n" for line in lines))


def read_image(path: Path) -> np.ndarray:
    """HWC uint8 RGB. A missing or undecodable file raises DataError naming it, and so does a name that is not
    UTF-8 (no result could name it faithfully)."""
    if shown_name(str(path)) != str(path):
        raise DataError(f"{shown_name(str(path))}: the file name is not valid UTF-8 (shown with \\x escapes); "
                        "rename the file")
    try:
        buf = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode copes with non-ASCII paths
    except OSError as e:
        raise DataError(f"{path}: cannot read image ({e.strerror or e})") from None
    return decode_image(buf, path)


def decode_image(buf: np.ndarray, path: Path) -> np.ndarray:
    """HWC uint8 RGB from a file's bytes (`path` names it in errors). An undecodable one raises DataError."""
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    except cv2.error as e:  # a decoder assertion: the pixel limit, a malformed header
        raise DataError(f"{path}: {_decode_failure(path, e)}") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode this image") from None
    if image is None:
        raise DataError(f"{path}: not a decodable image (corrupt, truncated or another format); remove or re-export it")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise DataError(f"{path}: a {image.shape[1]}×{image.shape[0]} image; each side must be at least "
                        f"{MIN_IMAGE_SIDE} pixels")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def scaled(image: np.ndarray, scale: float) -> np.ndarray:
    """`image` resized by `scale` (area interpolation when shrinking), each side at least one pixel: OpenCV's own
    `fx`/`fy` fail on a side that rounds to zero."""
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _decode_failure(path: Path, error: cv2.error) -> str:
    try:
        width, height = image_size(path)
    except DataError as e:  # the header already says why (above the pixel limit)
        return str(e).removeprefix(f"{path}: ")
    if width * height > MAX_IMAGE_PIXELS:
        return (f"{width}x{height} is {width * height / 1e6:.0f} Mpx, above the decoder's limit of "
                f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx; set CV_IO_MAX_IMAGE_PIXELS to allow more, or tile the image")
    detail = (error.err or str(error)).strip().splitlines()[0][:200]
    return f"OpenCV cannot decode it ({detail}); remove or re-export it"


def write_image(path: Path, image_rgb: np.ndarray) -> None:
    """Encode by the file's suffix and replace `path` atomically. A 2-D array is written as one grey channel
    (label masks keep their class indices)."""
    path = Path(path)
    pixels = image_rgb if image_rgb.ndim == 2 else cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(path.suffix or ".png", pixels)
    if not ok:
        raise DataError(f"{path}: OpenCV cannot encode an image with suffix {path.suffix!r}")
    write_bytes(path, encoded.tobytes())


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` atomically: a reader sees the old file or the new one, never half of it."""
    with atomic_open(path, "wb") as f:
        f.write(data)


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file to write `path` through, for results too big to build in memory first: written beside `path` and
    renamed over it when the block ends; a failed write (disk full) or an exception leaves no partial file.
    Text is UTF-8 with no newline translation (the csv module writes its own line ends)."""
    try:
        with atomic_path(path) as tmp, open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
    except OSError as e:
        if e.filename is None:  # a failed write() names no file; the message must
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


class JsonArray:
    """A JSON array written item by item into an open file, byte for byte what `json.dumps(list)` writes, without
    the list: `with JsonArray(f) as array: array.add(item)`; the closing bracket is written when the block ends."""

    def __init__(self, f: IO[str]):
        self.f, self.empty = f, True

    def __enter__(self) -> JsonArray:
        self.f.write("[")
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.f.write("]")

    def add(self, item) -> None:
        self.f.write(("" if self.empty else ", ") + json.dumps(item))
        self.empty = False

    def extend(self, items: Iterable) -> None:
        for item in items:
            self.add(item)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only; DataError if the file is not an image."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS // 2  # PIL refuses at twice its setting (and warns above it)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError:
        raise DataError(f"{path}: the image has more pixels than the decoder's limit of {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx; set "
                        "CV_IO_MAX_IMAGE_PIXELS to allow more, or tile the image") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:  # PIL's plugins raise all of these
        raise DataError(f"{path}: cannot read image header ({e})") from None
