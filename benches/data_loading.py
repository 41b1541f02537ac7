"""Data loading: decode + augment images/s for the tree-crown train pipeline, two ways, on the 18 train tiles.

1. Overhead: cvpipe's sample loading + YAML-built augmentation ÷ a bare OpenCV + albumentations loop running the
   same transforms (1.0 = no overhead).
2. Library: OpenCV decode + albumentations (what cvpipe uses) ÷ torchvision's decode_image + transforms v2
   written to do the same, with the boxes carried along (tv_tensors.BoundingBoxes). Per transform (each with
   p = 1, on decoded images), decode alone, and the whole list with the pipeline's probabilities.
   The colour transforms are the nearest v2 equivalents, not identical arithmetic: albumentations shifts
   brightness additively and hue/saturation/value in OpenCV's HSV units; v2's ColorJitter scales.
Interleaved repeats, medians. Run: `python benches/data_loading.py [--repeats 5]`; results in
benches/results/data_loading.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path
from torchvision import tv_tensors
from torchvision.io import decode_image
from torchvision.transforms import v2

from cvpipe.data.augment import apply_augment, build_augment
from cvpipe.data.fetchers import fetch_dataset
from cvpipe.data.formats import read_dataset
from cvpipe.loading import load_pipeline

REPO = Path(__file__).resolve().parents[1]


def rotate90() -> v2.Transform:
    """albumentations' RandomRotate90: a random multiple of 90° (0 included)."""
    return v2.RandomChoice([v2.RandomRotation((a, a), expand=True) for a in (0, 90, 180, 270)])


# (name, albumentations transform for a probability, torchvision v2 transform applied always, the pipeline's p),
# pipelines/treecrowns_faster_rcnn.yaml's list in order
PAIRS = [
    ("HorizontalFlip", lambda p: A.HorizontalFlip(p=p), v2.RandomHorizontalFlip(p=1), 0.5),
    ("VerticalFlip", lambda p: A.VerticalFlip(p=p), v2.RandomVerticalFlip(p=1), 0.5),
    ("RandomRotate90", lambda p: A.RandomRotate90(p=p), rotate90(), 0.5),
    ("RandomBrightnessContrast", lambda p: A.RandomBrightnessContrast(0.25, 0.25, p=p),
     v2.ColorJitter(brightness=0.25, contrast=0.25), 0.8),
    ("HueSaturationValue", lambda p: A.HueSaturationValue(10, 25, 15, p=p),
     v2.ColorJitter(brightness=15 / 255, saturation=25 / 255, hue=10 / 180), 0.5),
]


def timed(fn: Callable[[], None], times: list[float]) -> None:
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    fetch_dataset("treecrowns", REPO / "data")
    config = load_pipeline(REPO / "pipelines" / "treecrowns_faster_rcnn.yaml")
    dataset = read_dataset(REPO / config.data.root, "voc", config.data.train, config.data.classes)
    records = dataset.records
    n = len(records)
    bbox = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.4, clip=True)

    # 1. cvpipe's loading vs a bare OpenCV + albumentations loop
    ours = build_augment(config.augment, "train", seed=0)
    bare = A.Compose(list(ours.transforms), bbox_params=bbox, seed=0)

    def run_cvpipe() -> None:
        for i in range(n):
            apply_augment(ours, dataset.sample(i))

    def run_bare() -> None:
        for r in records:
            image = cv2.cvtColor(cv2.imread(str(r.path)), cv2.COLOR_BGR2RGB)
            bare(image=image, bboxes=np.clip(r.boxes, 0, None), labels=r.labels)

    # 2. albumentations vs torchvision v2: decoded inputs for the per-transform rows
    images = [cv2.cvtColor(cv2.imread(str(r.path)), cv2.COLOR_BGR2RGB) for r in records]
    tensors = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in images]
    boxes = [np.clip(r.boxes, 0, None) for r in records]
    tv_boxes = [tv_tensors.BoundingBoxes(torch.from_numpy(b).float(), format="XYXY", canvas_size=im.shape[:2])
                for b, im in zip(boxes, images)]

    def album(transform) -> Callable[[], None]:
        compose = A.Compose([transform], bbox_params=bbox, seed=0)
        return lambda: [compose(image=im, bboxes=b, labels=r.labels) for im, b, r in zip(images, boxes, records)]

    def torchvision(transform) -> Callable[[], None]:
        return lambda: [transform(tv_tensors.Image(t), b) for t, b in zip(tensors, tv_boxes)]

    whole_album = A.Compose([make(p) for _, make, _, p in PAIRS], bbox_params=bbox, seed=0)
    whole_tv = v2.Compose([v2.RandomApply([t], p=p) for _, _, t, p in PAIRS])

    def decode_album() -> None:
        for r in records:
            cv2.cvtColor(cv2.imread(str(r.path)), cv2.COLOR_BGR2RGB)

    def decode_tv() -> None:
        for r in records:
            decode_image(str(r.path))

    def whole_album_run() -> None:
        for r, b in zip(records, boxes):
            image = cv2.cvtColor(cv2.imread(str(r.path)), cv2.COLOR_BGR2RGB)
            whole_album(image=image, bboxes=b, labels=r.labels)

    def whole_tv_run() -> None:
        for r, b in zip(records, tv_boxes):
            whole_tv(tv_tensors.Image(decode_image(str(r.path))), b)

    rows = [("cvpipe loading ÷ bare loop", run_cvpipe, run_bare),
            ("decode (OpenCV ÷ torchvision.io)", decode_album, decode_tv),
            *((name, album(make(1.0)), torchvision(t)) for name, make, t, _ in PAIRS),
            ("whole list, decode included", whole_album_run, whole_tv_run)]
    times = {name: ([], []) for name, _, _ in rows}
    for _ in range(args.repeats):  # interleaved so machine noise hits both sides alike
        for name, first, second in rows:
            timed(first, times[name][0])
            timed(second, times[name][1])
    print(f"{n} treecrowns train tiles (400 px), {args.repeats} interleaved repeats, medians, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'':36} {'img/s':>9} {'baseline img/s':>15} {'ratio':>7}")
    results = []
    for name, (a, b) in times.items():
        ips_a, ips_b = n / statistics.median(a), n / statistics.median(b)
        results.append({"row": name, "img_s": round(ips_a, 1), "baseline_img_s": round(ips_b, 1),
                        "ratio": round(ips_a / ips_b, 3)})
        print(f"{name:36} {ips_a:9.1f} {ips_b:15.1f} {ips_a / ips_b:7.2f}")
    print("rows 2–: OpenCV + albumentations (cvpipe's) ÷ torchvision v2 (baseline); > 1 means cvpipe's is faster")
    save_results("data_loading", {"images": n, "repeats": args.repeats, "rows": results})


if __name__ == "__main__":
    main()
