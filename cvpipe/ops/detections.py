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

    def journal(self, classes: list[str] | None = None) -> dict[str, list]:
        """Boxes to 0.01 px and scores to 1e-5, as predict's journal (labels as class indices) and video's JSON
        lines (labels as the `classes` names) write them. `from_journal` reads predict's back."""
        return {"boxes": np.round(self.boxes.astype(np.float64), 2).tolist(),
                "scores": np.round(self.scores.astype(np.float64), 5).tolist(),
                "labels": self.labels.tolist() if classes is None else [classes[k] for k in self.labels]}

    @classmethod
    def from_journal(cls, entry: dict) -> Detections:
        """A predict journal entry's detections (its masks, RLE, stay in the entry: the instance writer reads them)."""
        return cls(np.asarray(entry["boxes"], np.float64).reshape(-1, 4), np.asarray(entry["scores"], np.float64),
                   np.asarray(entry["labels"], np.int64))

    def coco_results(self, image_id: int) -> list[dict]:
        """COCO results: xywh boxes to 0.01 px, scores to 1e-5, category ids from 1."""
        boxes = self.boxes.astype(np.float64).reshape(-1, 4)
        return [{"image_id": int(image_id), "category_id": int(label) + 1,
                 "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
                 "score": round(float(score), 5)}
                for (x1, y1, x2, y2), score, label in zip(boxes, self.scores, self.labels)]
