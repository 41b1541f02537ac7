"""Weighted boxes fusion (ensemble-boxes, Solovyev et al. 2021), the one place it is called: test-time
augmentation fuses its views with it, sliced inference may fuse its slices' boxes with it.

ensemble-boxes works in [0, 1] coordinates and float64; boxes come back in the image's pixels, best first.
"""

from __future__ import annotations

import numpy as np
import torch


def weighted_boxes(sets: list[dict], size: tuple[int, int], iou: float, limit: int | None = None) -> dict:
    """One detection dict (CPU tensors: boxes in pixels, scores, labels; at most `limit`, best first) from
    `sets` of `{boxes, scores, labels}` of one (height, width) image: each set a model's or a view's, boxes that
    several sets agree on averaged, a box's score scaled by the share of sets that found it."""
    from ensemble_boxes import weighted_boxes_fusion

    height, width = size
    scale = np.array([width, height, width, height], dtype=np.float64)
    boxes, scores, labels = weighted_boxes_fusion(
        [(s["boxes"].double().numpy() / scale).clip(0, 1) for s in sets],
        [s["scores"].double().numpy() for s in sets], [s["labels"].numpy() for s in sets],
        iou_thr=iou, skip_box_thr=0.0)
    order = np.argsort(-scores, kind="stable")[:limit]
    return {"boxes": torch.from_numpy(boxes[order] * scale).float(), "scores": torch.from_numpy(scores[order]).float(),
            "labels": torch.from_numpy(labels[order]).long()}
