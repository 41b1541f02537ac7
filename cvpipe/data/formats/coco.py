"""COCO JSON: boxes `xywh`, polygons and RLE masks (decoded with pycocotools when a sample is loaded).

SPLIT names the annotation file (`annotations/instances_val.json`) or a folder holding `annotations.json`;
image `file_name`s are relative to the JSON's folder (or to ROOT/images). Written: OUT/SPLIT/annotations.json
beside the images. Category ids are kept in the order of `classes`; labels index that order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from cvpipe.data.records import Dataset, Problem, Record, inside_root
from cvpipe.errors import DataError
from cvpipe.io.images import write_text


def annotation_file(root: Path, split: str) -> Path:
    target = inside_root(root, Path(split), where=f"split {split!r}")
    if target.is_dir():
        target = target / "annotations.json"
    if not target.exists():
        raise DataError(f"{target}: no COCO annotation file; SPLIT must name a .json file or a folder with annotations.json")
    return target


def load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO file (expected a mapping with an 'images' list)")
    return data


def read_coco(root: Path, split: str, classes: list[str]) -> Dataset:
    root = Path(root)
    path = annotation_file(root, split)
    data = load_json(path)
    problems: list[Problem] = []
    categories = {c["id"]: c["name"] for c in data.get("categories", []) if "id" in c and "name" in c}
    if classes:
        for cid, name in categories.items():
            if name not in classes:
                problems.append(Problem("unknown class", f"{path} category {cid}", f"class {name!r} is not in {classes}"))
    else:
        classes = [categories[k] for k in sorted(categories)]
    label_of = {cid: (classes.index(name) if name in classes else -1) for cid, name in categories.items()}

    records: dict[int, Record] = {}
    for img in data["images"]:
        image_id = img.get("id")
        if image_id in records:
            problems.append(Problem("duplicate id", f"{path} image id {image_id}", f"{img.get('file_name')} repeats it"))
            continue
        name = str(img.get("file_name", ""))
        candidate = path.parent / name
        if not candidate.exists() and (root / "images" / name).exists():
            candidate = root / "images" / name
        image_path = inside_root(root, candidate.relative_to(root) if candidate.is_relative_to(root) else candidate,
                                 where=f"{path} image {image_id}")
        records[image_id] = Record(path=image_path, file_name=name, image_id=int(image_id), width=int(img.get("width", 0)),
                                   height=int(img.get("height", 0)))
    boxes: dict[int, list] = {k: [] for k in records}
    labels: dict[int, list] = {k: [] for k in records}
    segs: dict[int, list] = {k: [] for k in records}
    seen_ann: set = set()
    for ann in data.get("annotations", []):
        where = f"{path} annotation {ann.get('id')}"
        if ann.get("id") in seen_ann:
            problems.append(Problem("duplicate id", where, "annotation id repeats"))
            continue
        seen_ann.add(ann.get("id"))
        image_id = ann.get("image_id")
        if image_id not in records:
            problems.append(Problem("missing image", where, f"refers to image id {image_id}, which is not in 'images'"))
            continue
        cid = ann.get("category_id")
        if cid not in label_of:
            problems.append(Problem("unknown class", where, f"category_id {cid} is not among the categories"))
        bbox = ann.get("bbox") or [math.nan] * 4
        x, y, w, h = (float(v) if v is not None else math.nan for v in bbox)
        boxes[image_id].append([x, y, x + w, y + h])
        labels[image_id].append(label_of.get(cid, -1))
        segs[image_id].append(ann.get("segmentation"))
    for image_id, r in records.items():
        r.boxes = np.array(boxes[image_id], np.float32).reshape(-1, 4)
        r.labels = np.array(labels[image_id], np.int64)
        if segs[image_id] and all(s for s in segs[image_id]):
            r.segmentations = segs[image_id]
    return Dataset(root, split, classes, list(records.values()), problems)


def to_coco(dataset: Dataset) -> dict:
    """The dataset as a COCO dict; category ids are 1..K in class order (0 stays free for background)."""
    images, annotations = [], []
    for r in dataset.records:
        images.append({"id": r.image_id, "file_name": r.file_name, "width": r.width, "height": r.height})
        for k, (box, label) in enumerate(zip(r.boxes, r.labels)):
            x1, y1, x2, y2 = (float(v) for v in box)
            ann = {"id": len(annotations) + 1, "image_id": r.image_id, "category_id": int(label) + 1,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            if r.segmentations is not None:
                seg = r.segmentations[k]
                if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
                    seg = {**seg, "counts": seg["counts"].decode("ascii")}
                ann["segmentation"] = seg
            annotations.append(ann)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(dataset.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(dataset: Dataset, out: Path, split: str) -> None:
    write_text(Path(out) / split / "annotations.json", json.dumps(to_coco(dataset)))
