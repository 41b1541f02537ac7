"""Instance-mask PNG folders (read-only), the layout microscopy and cell-tracking tools write:

    ROOT/SPLIT/images/NAME.*        the images
    ROOT/SPLIT/instances/NAME.png   0 = background, every other value one instance (8- or 16-bit)
    ROOT/SPLIT/classes/NAME.png     class index per pixel, for datasets of more than one class (optional with one)

An instance's class is the class most of its pixels have in classes/NAME.png. Masks become COCO RLE at read time,
so the rest of cvpipe sees what the COCO reader gives (boxes, labels, `segmentations`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cvpipe.data.records import Dataset, Problem, Record, boxes_of_masks, encode_masks, inside_root, malformed
from cvpipe.errors import DataError
from cvpipe.io.images import image_size, list_images


def instances_from_label_image(instances: np.ndarray) -> tuple[np.ndarray, list[dict], list[int]]:
    """A label image (0 = background, k = instance k) → tight xyxy boxes, COCO RLE masks and the instance values,
    in increasing order."""
    values = [int(k) for k in np.unique(instances)[1:]]
    boxes, rles = np.zeros((len(values), 4), np.float32), []
    for i, k in enumerate(values):  # one mask at a time: a large label image may hold thousands of instances
        mask = (instances == k).astype(np.uint8)[None]
        boxes[i] = boxes_of_masks(mask)[0][0]
        rles += encode_masks(mask)
    return boxes, rles, values


def _read_png(path: Path) -> np.ndarray | None:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return image if image is not None and image.ndim == 2 else None


def read_instance_masks(root: Path, split: str, classes: list[str]) -> Dataset:
    split_dir = inside_root(Path(root), Path(split), where=f"split {split!r}")
    image_dir, instance_dir, class_dir = split_dir / "images", split_dir / "instances", split_dir / "classes"
    if not image_dir.is_dir() or not instance_dir.is_dir():
        raise DataError(f"{split_dir}: expected ROOT/{split}/images/ and ROOT/{split}/instances/ (one PNG per image, "
                        "0 = background, each other value one instance)")
    if len(classes) > 1 and not class_dir.is_dir():
        raise DataError(f"{class_dir}: no such folder; with {len(classes)} classes each instance's class comes from "
                        f"ROOT/{split}/classes/NAME.png (class index per pixel)")
    records, problems = [], []
    for path in list_images(image_dir):
        stem = path.relative_to(image_dir).with_suffix(".png")
        instances = _read_png(instance_dir / stem)
        if instances is None:
            what = "missing" if not (instance_dir / stem).exists() else "unreadable (not a one-channel PNG)"
            problems.append(Problem("missing mask", str(path), f"instance mask {instance_dir / stem} is {what}"))
            continue
        h, w = instances.shape
        try:
            size = image_size(path)
        except DataError as e:
            problems.append(malformed(str(path), str(e).removeprefix(f"{path}: ")))
            continue
        if size != (w, h):
            problems.append(malformed(str(path), f"its instance mask {instance_dir / stem} is {w}×{h}, the image "
                                                 f"{size[0]}×{size[1]}; a mask must cover its image pixel for pixel"))
            continue
        boxes, rles, values = instances_from_label_image(instances)
        labels = np.zeros(len(values), np.int64)
        if len(classes) > 1:
            class_map = _read_png(class_dir / stem)
            if class_map is None or class_map.shape != instances.shape:
                problems.append(Problem("missing mask", str(path), f"class mask {class_dir / stem} is missing, "
                                        f"unreadable or not {w}×{h} like its instance mask"))
                continue
            for i, value in enumerate(values):
                labels[i] = np.bincount(class_map[instances == value]).argmax()
            unknown = labels >= len(classes)
            if unknown.any():
                problems.append(Problem("unknown class", str(class_dir / stem), f"class indices "
                                        f"{sorted(set(labels[unknown].tolist()))} are not in data.classes {classes}"))
                labels[unknown] = -1
        records.append(Record(path=path, file_name=path.relative_to(image_dir).as_posix(), image_id=len(records),
                              width=w, height=h, boxes=boxes, labels=labels, segmentations=rles))
    return Dataset(Path(root), split, list(classes), records, problems)
