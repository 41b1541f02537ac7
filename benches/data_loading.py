"""Data path overhead: cvpipe's sample loading + YAML-built augmentation vs a bare OpenCV + albumentations loop.

Both decode the same treecrowns training tiles and run the same transforms; prints medians and the ratio
(cvpipe throughput / bare throughput; 1.0 = no overhead). Run: `make bench` or `python benches/data_loading.py`.
"""

from __future__ import annotations

import statistics
import time

import albumentations as A
import cv2
import numpy as np

from cvpipe.config import load_pipeline
from cvpipe.data.augment import apply_augment, build_augment
from cvpipe.data.fetchers import fetch_dataset
from cvpipe.data.formats import read_dataset

REPEATS = 5


def main() -> None:
    fetch_dataset("treecrowns")
    config = load_pipeline("pipelines/treecrowns_faster_rcnn.yaml")
    dataset = read_dataset(config.data.root, "voc", config.data.train, config.data.classes)
    ours = build_augment(config.augment, "train", seed=0)
    bare = A.Compose(list(ours.transforms), bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                                     min_visibility=0.4, clip=True), seed=0)

    def run_cvpipe() -> None:
        for i in range(len(dataset)):
            apply_augment(ours, dataset.sample(i))

    def run_bare() -> None:
        for r in dataset.records:
            image = cv2.cvtColor(cv2.imread(str(r.path)), cv2.COLOR_BGR2RGB)
            bare(image=image, bboxes=np.clip(r.boxes, 0, None), labels=r.labels)

    timings = {"bare": [], "cvpipe": []}
    for _ in range(REPEATS):  # interleaved so machine noise hits both alike
        for name, fn in (("bare", run_bare), ("cvpipe", run_cvpipe)):
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    n = len(dataset)
    bare_ips = n / statistics.median(timings["bare"])
    ours_ips = n / statistics.median(timings["cvpipe"])
    print(f"images: {n} treecrowns train tiles, {REPEATS} repeats, medians")
    print(f"bare OpenCV + albumentations: {bare_ips:8.1f} img/s")
    print(f"cvpipe sample + augment:      {ours_ips:8.1f} img/s")
    print(f"ratio cvpipe / bare: {ours_ips / bare_ips:.3f}")


if __name__ == "__main__":
    main()
