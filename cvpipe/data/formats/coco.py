"""COCO JSON: boxes `xywh`, polygons and RLE masks (decoded with pycocotools when a sample is loaded).

SPLIT names the annotation file (`annotations/instances_val.json`) or a folder holding `annotations.json`;
image `file_name`s are relative to the JSON's folder (or to ROOT/images). Written: OUT/SPLIT/annotations.json
beside the images. Category ids are kept in the order of `classes`; labels index that order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cvpipe.data.records import Dataset, Problem, Record, inside_root, malformed
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
    categories = {c["id"]: str(c["name"]) for c in _entries(data, "categories", path, problems)
                  if "id" in c and "name" in c}
    if classes:
        for cid, name in categories.items():
            if name not in classes:
                problems.append(Problem("unknown class", f"{path} category {cid}", f"class {name!r} is not in {classes}"))
    else:
        classes = [categories[k] for k in sorted(categories)]
    label_of = {cid: (classes.index(name) if name in classes else -1) for cid, name in categories.items()}

    records: dict[int, Record] = {}
    for img in _entries(data, "images", path, problems):
        image_id = img.get("id")
        image_problem = _image_problem(img)
        if image_problem:
            problems.append(Problem("unreadable annotation", f"{path} image {image_id}", image_problem))
            continue
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
    for ann in _entries(data, "annotations", path, problems):
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
        geometry = _geometry_problem(ann, records[image_id])
        if geometry:
            problems.append(malformed(where, geometry))
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes[image_id].append([x, y, x + w, y + h])
        labels[image_id].append(label_of.get(cid, -1))
        segs[image_id].append(ann.get("segmentation"))
    for image_id, r in records.items():
        r.boxes = np.array(boxes[image_id], np.float32).reshape(-1, 4)
        r.labels = np.array(labels[image_id], np.int64)
        if segs[image_id] and all(s for s in segs[image_id]):
            r.segmentations = segs[image_id]
    return Dataset(root, split, classes, list(records.values()), problems)


def _entries(data: dict, key: str, path: Path, problems: list[Problem]) -> list[dict]:
    """The mappings in `data[key]`; anything else there is reported and left out."""
    items = data.get(key, [])
    if not isinstance(items, list):
        raise DataError(f"{path}: '{key}' must be a list, got {type(items).__name__}")
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(malformed(f"{path} {key}[{k}]", f"expected a mapping, got {json.dumps(item)[:60]}"))
    return [item for item in items if isinstance(item, dict)]


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _image_problem(img: dict) -> str:
    if not isinstance(img.get("id"), int) or isinstance(img.get("id"), bool):
        return f"'id' must be an integer, got {img.get('id')!r}"
    if not isinstance(img.get("file_name"), str) or not img["file_name"]:
        return f"'file_name' must be a non-empty string, got {img.get('file_name')!r}"
    for key in ("width", "height"):
        if key in img and not (_is_number(img[key]) and img[key] >= 0):
            return f"'{key}' must be a number ≥ 0, got {img[key]!r}"
    return ""


def _geometry_problem(ann: dict, image: Record) -> str:
    """What is wrong with an annotation's `bbox` and `segmentation`, or "" — checked here so that pycocotools and
    tuple unpacking never see them."""
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        return f"'bbox' must be 4 numbers [x, y, width, height], got {json.dumps(bbox)[:80]}"
    seg = ann.get("segmentation")
    if seg is None or seg == []:
        return ""
    if isinstance(seg, list):
        for k, polygon in enumerate(seg):
            if not (isinstance(polygon, list) and all(_is_number(v) for v in polygon)):
                return f"'segmentation' polygon {k} must be a list of numbers [x1, y1, x2, y2, ...]"
            if len(polygon) < 6 or len(polygon) % 2:
                return (f"'segmentation' polygon {k} has {len(polygon)} coordinates; a polygon needs an even count "
                        "of at least 6 (3 points)")
        return ""
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)):
            return f"'segmentation' RLE 'size' must be [height, width], got {json.dumps(size)[:80]}"
        if not (isinstance(counts, str) or isinstance(counts, list) and all(isinstance(v, int) and v >= 0 for v in counts)):
            return "'segmentation' RLE 'counts' must be a string (compressed) or a list of run lengths"
        if image.width and image.height and size != [image.height, image.width]:
            return (f"'segmentation' RLE 'size' {size} is not the image's [height, width] "
                    f"[{image.height}, {image.width}]")
        runs = rle_runs(counts)
        if runs is None or sum(runs) != size[0] * size[1]:
            return (f"'segmentation' RLE 'counts' do not decode to {size[0]}×{size[1]} pixels"
                    + ("" if runs is None else f" (their runs add up to {sum(runs)})"))
        return ""
    return f"'segmentation' must be polygons (a list of lists) or RLE (a mapping), got {json.dumps(seg)[:80]}"


def rle_runs(counts: str | list[int]) -> list[int] | None:
    """The run lengths of an RLE's `counts` (a list as it is; a string in COCO's compressed form, decoded as
    pycocotools' rleFrString does), or None where they cannot be: a character outside the alphabet, a negative
    run. Written by hand because pycocotools checks neither, and its decoder writes past the mask when the runs
    add up to more than its size."""
    if isinstance(counts, list):
        return counts
    runs: list[int] = []
    p = 0
    while p < len(counts):
        value, k, more = 0, 0, True
        while more:
            if p >= len(counts) or not 48 <= ord(counts[p]) < 48 + 64 or k > 12:
                return None
            c = ord(counts[p]) - 48
            value |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                value |= -1 << (5 * k)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return None
        runs.append(value)
    return runs


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
