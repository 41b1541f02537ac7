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
