"""YOLO txt: `class cx cy w h` normalised to the image, one .txt per image, plus a data yaml with the names.

Layout (Ultralytics): ROOT/data.yaml (`path`, `train`, `val`, `names`), ROOT/images/SPLIT/, ROOT/labels/SPLIT/.
The reader takes ROOT as the yaml's folder; the writer puts ROOT's absolute path in `path`, as Ultralytics needs.
Image sizes come from the image headers, so a missing image is a problem, not a crash.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from cvpipe.data.records import Dataset, Problem, Record, inside_root, malformed
from cvpipe.errors import ConfigError, DataError
from cvpipe.io.images import image_size, list_images, write_text
from cvpipe.safe_yaml import load_yaml


def _data_yaml(root: Path) -> dict:
    for name in ("data.yaml", "dataset.yaml"):
        path = root / name
        if path.exists():
            try:
                data = load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
            except (ConfigError, UnicodeDecodeError) as e:
                raise DataError(str(e) if isinstance(e, ConfigError) else f"{path}: not UTF-8 text") from None
            if not isinstance(data, dict):
                raise DataError(f"{path}: expected a mapping with 'names' and the split folders")
            return data
    return {}


def _names(data: dict) -> list[str]:
    names = data.get("names", [])
    if isinstance(names, dict):  # Ultralytics allows {0: person, 1: bicycle}
        return [names[k] for k in sorted(names)]
    return list(names)


def _line_box(parts: list[str]) -> tuple[tuple[float, ...] | None, str]:
    """(cx, cy, w, h) normalised from a label line, or (None, what is wrong). Ultralytics' segmentation lines
    (`class x1 y1 x2 y2 x3 y3 ...`) give their polygon's bounding box."""
    try:
        numbers = [float(v) for v in parts[1:]]
        int(parts[0])
    except ValueError:
        return None, "a class id (integer) then numbers expected"
    if not all(math.isfinite(v) for v in numbers):
        return None, "coordinates must be finite numbers"
    if len(numbers) == 4:
        return tuple(numbers), ""
    if len(numbers) >= 6 and len(numbers) % 2 == 0:
        xs, ys = numbers[0::2], numbers[1::2]
        return ((min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)), ""
    return None, (f"{len(parts)} columns: expected 5 ('class cx cy w h') or a polygon ('class x1 y1 x2 y2 x3 y3 ...', "
                  "an even count of at least 6 coordinates)")


def read_yolo(root: Path, split: str, classes: list[str]) -> Dataset:
    root = Path(root)
    data = _data_yaml(root)
    file_names = _names(data)
    classes = list(classes) or file_names
    problems: list[Problem] = []
    image_dir = inside_root(root, Path(data.get(split, f"images/{split}")), where=f"split {split!r}")
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: no image folder for split {split!r}; expected ROOT/images/{split} or data.yaml '{split}:'")
    label_dir = Path(str(image_dir).replace(f"{root}/images", f"{root}/labels", 1))
    # A YOLO id means the data yaml's name; map it to our class order.
    remap = {i: (classes.index(n) if n in classes else -1) for i, n in enumerate(file_names or classes)}
    records = []
    for image_id, path in enumerate(list_images(image_dir)):
        rel = path.relative_to(image_dir)
        try:
            width, height = image_size(path)
        except DataError as e:
            problems.append(Problem("unreadable image", str(path), str(e)))
            width = height = 0
        boxes, labels = [], []
        txt = label_dir / rel.with_suffix(".txt")
        for n, line in enumerate(txt.read_text().splitlines() if txt.exists() else []):
            parts = line.split()
            if not parts:
                continue
            box, detail = _line_box(parts)
            if box is None:
                problems.append(malformed(f"{txt}:{n + 1}", f"{detail}, got {line.strip()!r}"))
                continue
            cls, (cx, cy, w, h) = int(parts[0]), box
            label = remap.get(cls, -1)
            if label < 0:
                problems.append(Problem("unknown class", f"{txt}:{n + 1}", f"class id {cls} is not in {classes}"))
            boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
            labels.append(label)
        records.append(Record(path=path, file_name=rel.as_posix(), image_id=image_id, width=width, height=height,
                              boxes=np.array(boxes, np.float32).reshape(-1, 4), labels=np.array(labels, np.int64)))
    return Dataset(root, split, classes, records, problems)


def write_yolo(dataset: Dataset, out: Path, split: str) -> None:
    out = Path(out)
    for r in dataset.records:
        lines = []
        for (x1, y1, x2, y2), label in zip(r.boxes.astype(np.float64), r.labels):
            cx, cy = (x1 + x2) / 2 / r.width, (y1 + y2) / 2 / r.height
            w, h = (x2 - x1) / r.width, (y2 - y1) / r.height
            lines.append(f"{int(label)} {cx:.12g} {cy:.12g} {w:.12g} {h:.12g}")
        write_text(out / "labels" / split / Path(r.file_name).with_suffix(".txt"), "".join(f"{ln}\n" for ln in lines))
    data_yaml = out / "data.yaml"
    data = (yaml.safe_load(data_yaml.read_text()) or {}) if data_yaml.exists() else {}
    # Ultralytics resolves a relative `path` against its own datasets folder, not the yaml's (and without one, its
    # versions differ), so `path` is this folder, absolute. cvpipe's reader reads the yaml's folder whatever it says.
    data.update({"path": str(out.resolve()), split: f"images/{split}", "names": list(dataset.classes)})
    write_text(data_yaml, yaml.safe_dump(data, sort_keys=False))
