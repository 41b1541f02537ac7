"""Synthetic shapes with boxes and instance masks, for fast unit tests (demos use the real data)."""

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
