"""Synthetic shapes with boxes and instance masks, for fast unit tests (demos use the real data); synthetic COCO
ground truth and results, for checking and timing COCO evaluators."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cvpipe.data.records import Dataset, Record
from cvpipe.io.images import write_image

SHAPE_CLASSES = ["square", "disc"]


def make_shapes(out: Path, split: str = "train", n: int = 4, size: int = 96, seed: int = 0) -> Dataset:
    """Write `n` PNGs under OUT/SPLIT with 1–3 shapes each; return the Dataset describing them."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        image = np.full((size, size + 16, 3), 40, np.uint8)
        boxes, labels, masks = [], [], []
        for _ in range(int(rng.integers(1, 4))):
            label = int(rng.integers(0, 2))
            w = int(rng.integers(12, size // 3))
            x, y = int(rng.integers(0, size + 16 - w)), int(rng.integers(0, size - w))
            mask = np.zeros(image.shape[:2], np.uint8)
            if label == 0:
                cv2.rectangle(mask, (x, y), (x + w - 1, y + w - 1), 1, -1)
            else:
                cv2.circle(mask, (x + w // 2, y + w // 2), w // 2, 1, -1)
            ys, xs = np.nonzero(mask)
            image[mask.astype(bool)] = rng.integers(90, 255, 3)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(label)
            masks.append(mask)
        name = f"shape_{i:03d}.png"
        write_image(Path(out) / split / name, image)
        records.append(Record(path=Path(out) / split / name, file_name=name, image_id=i + 1, width=image.shape[1],
                              height=image.shape[0], boxes=np.array(boxes, np.float32), labels=np.array(labels, np.int64),
                              segmentations=[_rle(m) for m in masks]))
    return Dataset(Path(out), split, list(SHAPE_CLASSES), records)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def synthetic_coco(images: int, detections: int, *, classes: int = 3, seed: int = 0) -> tuple[dict, list[dict]]:
    """A COCO ground truth and a results list that exercise every rule of COCOeval: objects of all three area
    ranges, crowd regions (5 %), images without objects, classes missing from some images, near-miss and exact
    detections, false positives, and more than 100 detections on some images (the maxDets cut). With
    `classes=80` it is shaped like COCO val (7.3 objects per image).
    `detections` is the total count, spread unevenly over the images."""
    rng = np.random.default_rng(seed)
    gt = {"images": [{"id": i + 1, "width": 640, "height": 480} for i in range(images)],
          "categories": [{"id": k + 1, "name": f"c{k + 1}"} for k in range(classes)], "annotations": []}
    results: list[dict] = []
    weights = rng.gamma(3.0, size=images)  # uneven: some images pass the maxDets cut of 100
    weights[rng.random(images) < 0.03] = 0  # and some get no detection at all
    per_image = rng.multinomial(detections, weights / weights.sum())
    for image, budget in zip(gt["images"], per_image):
        for _ in range(int(rng.poisson(7.3))):  # COCO's mean objects per image
            w, h = np.exp(rng.uniform(np.log(4), np.log(300), 2))
            x, y = rng.uniform(0, 640 - min(w, 639)), rng.uniform(0, 480 - min(h, 479))
            category = int(rng.integers(1, classes + 1))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image["id"],
                                      "category_id": category, "bbox": [x, y, w, h], "area": float(w * h),
                                      "iscrowd": int(rng.random() < 0.05)})
            if budget > 0 and rng.random() < 0.85:  # found, more or less exactly
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
                results.append({"image_id": image["id"], "category_id": category,
                                "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
                                "score": float(rng.uniform(0.3, 1.0))})
                budget -= 1
        for _ in range(int(budget)):  # false positives, mostly low-scoring
            w, h = np.exp(rng.uniform(np.log(4), np.log(300), 2))
            results.append({"image_id": image["id"], "category_id": int(rng.integers(1, classes + 1)),
                            "bbox": [float(rng.uniform(0, 600)), float(rng.uniform(0, 440)), float(w), float(h)],
                            "score": float(rng.beta(1, 3))})
    return gt, results


def corrupt_labels(dataset: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, list[tuple[str, str, tuple]]]:
    """A copy of a box dataset with `fraction` of its boxes made wrong in the ways people get labels wrong, in
    equal shares: dropped ("missing"), added on background ("spurious": a box of a real box's size where it
    overlaps none), moved by 30–50 % of its size ("loose"), and given another class ("wrong class", where there
    are several). Returns (the copy, each corruption as (file, kind, box): the box as it is labeled now, or for a
    dropped box the box that was there), for simulating `cvpipe label audit` (benches/labeling.py). Masks are
    dropped."""
    import copy

    import torch
    from torchvision.ops import box_iou

    rng = np.random.default_rng(seed)
    kinds = ["missing", "spurious", "loose"] + (["wrong class"] if len(dataset.classes) > 1 else [])
    out = copy.deepcopy(dataset)
    objects = [(r, k) for r in out.records for k in range(len(r.boxes))]
    chosen = rng.choice(len(objects), size=round(fraction * len(objects)), replace=False)
    truth: list[tuple[str, str, tuple]] = []
    dropped: dict[int, list[int]] = {}
    for n, index in enumerate(chosen):
        record, k = objects[index]
        kind, box = kinds[n % len(kinds)], record.boxes[k].copy()
        truth.append((record.file_name, kind, tuple(np.round(box, 2).tolist())))
        if kind == "missing":
            dropped.setdefault(id(record), []).append(k)
        elif kind == "loose":
            w, h = box[2] - box[0], box[3] - box[1]
            shift = rng.uniform(0.3, 0.5, 2) * [w, h] * rng.choice([-1, 1], 2)
            record.boxes[k] = box + np.array([shift[0], shift[1], shift[0], shift[1]], np.float32)
            truth[-1] = (record.file_name, kind, tuple(np.round(record.boxes[k], 2).tolist()))
        elif kind == "wrong class":
            record.labels[k] = rng.choice([c for c in range(len(dataset.classes)) if c != record.labels[k]])
        else:  # spurious: a real box's size, somewhere it overlaps no box
            w, h = box[2] - box[0], box[3] - box[1]
            for _ in range(100):
                x, y = rng.uniform(0, record.width - w), rng.uniform(0, record.height - h)
                added = np.array([[x, y, x + w, y + h]], np.float32)
                others = torch.from_numpy(record.boxes.reshape(-1, 4))
                if not len(others) or box_iou(torch.from_numpy(added), others).max() < 0.05:
                    record.boxes = np.concatenate([record.boxes, added])
                    record.labels = np.append(record.labels, record.labels[k])
                    truth[-1] = (record.file_name, kind, tuple(np.round(added[0], 2).tolist()))
                    break
            else:
                truth.pop()  # nowhere free
    for record in out.records:
        gone = dropped.get(id(record), [])
        keep = np.array([k not in gone for k in range(len(record.boxes))], bool)
        record.boxes, record.labels, record.segmentations = record.boxes[keep], record.labels[keep], None
    return out, truth
