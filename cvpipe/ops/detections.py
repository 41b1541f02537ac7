"""One image's detections as one value: boxes, scores, labels, and where there are any instance masks and track
ids, every field aligned by row, so that filtering, tracking or indexing can never separate a box from its mask.

Modelled on supervision's `Detections` (which the tracker speaks); not that class itself, because its masks are
image-sized arrays, and a large image's instances are kept here as crops placed in the image (`PlacedMask`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cvpipe.data.records import PlacedMask


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # [N, 4] xyxy in the image's pixels
    scores: np.ndarray  # [N]
    labels: np.ndarray  # [N] class indices
    masks: list[PlacedMask] | np.ndarray | None = None  # per row: placed crops, or an [N, H, W] array
    track_ids: np.ndarray | None = None  # [N] ids from 1, where a tracker gave them

    @classmethod
    def from_output(cls, output: dict) -> Detections:
        """A detector's `{boxes, scores, labels}` CPU tensors (the masks, where there are any, are left out: how
        they become masks is the instance task's business)."""
        return cls(output["boxes"].numpy().reshape(-1, 4), output["scores"].numpy(), output["labels"].numpy())

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, rows) -> Detections:
        """The detections at `rows` (a boolean mask or indices), every field alike."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        masks = self.masks
        if isinstance(masks, list):
            masks = [masks[i] for i in rows.tolist()]
        elif masks is not None:
            masks = masks[rows]
        return Detections(self.boxes[rows].reshape(-1, 4), self.scores[rows], self.labels[rows], masks,
                          None if self.track_ids is None else self.track_ids[rows])

    def at_least(self, conf: float) -> Detections:
        """Those scoring `conf` or more: the one confidence filter."""
        return self[self.scores >= conf]

    def shifted(self, x: int, y: int) -> Detections:
        """Moved by (x, y) pixels: a slice's detections into the whole image's pixels (placed masks move too)."""
        masks = self.masks
        if isinstance(masks, list):
            masks = [PlacedMask(m.x + x, m.y + y, m.crop) for m in masks]
        return replace(self, boxes=self.boxes.reshape(-1, 4) + np.array([x, y, x, y], np.float32), masks=masks)

    @staticmethod
    def joined(parts: list[Detections]) -> Detections:
        """One set of every part's rows, in order (masks joined where every part has them as a list)."""
        if not parts:
            return Detections.empty()
        masks = [m for part in parts for m in part.masks] if all(isinstance(p.masks, list) for p in parts) else None
        return Detections(np.concatenate([p.boxes.reshape(-1, 4) for p in parts]),
                          np.concatenate([p.scores for p in parts]), np.concatenate([p.labels for p in parts]), masks)

    def with_masks(self, masks) -> Detections:
        return replace(self, masks=masks)

    def fields(self) -> dict[str, np.ndarray]:
        """`{boxes, scores, labels}`, as the COCO result writers read them."""
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels}

    def journal(self) -> dict[str, list]:
        """Boxes to 0.01 px and scores to 1e-5, as predict's journal and video's JSON lines write them."""
        return {"boxes": np.round(self.boxes.astype(np.float64), 2).tolist(),
                "scores": np.round(self.scores.astype(np.float64), 5).tolist()}
