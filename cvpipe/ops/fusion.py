"""Weighted boxes fusion (ensemble-boxes, Solovyev et al. 2021), the one place it is called: test-time
augmentation fuses its views with it, sliced inference may fuse its slices' boxes with it.

ensemble-boxes works in [0, 1] coordinates and float64; boxes come back in the image's pixels, best first.
"""

from __future__ import annotations

import numpy as np

from cvpipe.ops.detections import Detections


def weighted_boxes(sets: list[Detections], size: tuple[int, int], iou: float, limit: int | None = None) -> Detections:
    """One set of detections (at most `limit`, best first) from `sets` of one (height, width) image: each set a
    model's or a view's, boxes that several sets agree on averaged, a box's score scaled by the share of sets that
    found it."""
    from ensemble_boxes import weighted_boxes_fusion

    height, width = size
    scale = np.array([width, height, width, height], dtype=np.float64)
    normalised = [(s.boxes.astype(np.float64).reshape(-1, 4) / scale).clip(0, 1) for s in sets]
    # ensemble-boxes skips a box of zero area inside the image (a one-stage head may give one at a border),
    # warning for each; leave them out here, to the same result
    kept = [(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) > 0 for b in normalised]
    boxes, scores, labels = weighted_boxes_fusion(
        [b[k] for b, k in zip(normalised, kept)], [s.scores.astype(np.float64)[k] for s, k in zip(sets, kept)],
        [s.labels[k] for s, k in zip(sets, kept)], iou_thr=iou, skip_box_thr=0.0)
    order = np.argsort(-scores, kind="stable")[:limit]
    return Detections((boxes[order] * scale).astype(np.float32), scores[order].astype(np.float32),
                      labels[order].astype(np.int64))
