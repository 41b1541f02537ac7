"""Semantic segmentation metrics from one confusion matrix: pixel accuracy, mean class accuracy, per-class IoU,
mIoU, frequency-weighted IoU (the FCN paper's four). The matrix is accumulated on the model's device.

Hand-written: each is a line of arithmetic on the confusion matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cvpipe.metrics.base import Metrics, finite


class ConfusionMatrix:
    """`[true, predicted]` pixel counts, `update()` per batch on the device; pixels labelled `ignore_index` skipped."""

    def __init__(self, num_classes: int, ignore_index: int, device: torch.device | str = "cpu"):
        self.k, self.ignore_index = num_classes, ignore_index
        self.counts = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        keep = target != self.ignore_index
        index = target[keep].long() * self.k + predicted[keep].long()
        self.counts += torch.bincount(index, minlength=self.k * self.k)

    def matrix(self) -> np.ndarray:
        return self.counts.reshape(self.k, self.k).cpu().numpy()


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU of a [true, predicted] matrix; NaN for a class in neither the labels nor the predictions."""
    confusion = confusion.astype(np.float64)
    hits = np.diag(confusion)
    union = confusion.sum(1) + confusion.sum(0) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, hits / union, np.nan)


class WorstImages:
    """The `keep` val images with the lowest mean IoU (over the classes in their labels or prediction), with the
    picture, labels and prediction at most REPORT_SIDE pixels on a side, for the report."""

    REPORT_SIDE = 512

    def __init__(self, num_classes: int, ignore_index: int, keep: int = 8):
        self.k, self.ignore_index, self.keep = num_classes, ignore_index, keep
        self.found: list[tuple[float, int, np.ndarray, np.ndarray, np.ndarray]] = []

    def update(self, image_id: int, image: torch.Tensor, predicted: torch.Tensor, target: torch.Tensor) -> None:
        one = ConfusionMatrix(self.k, self.ignore_index, target.device)
        one.update(predicted, target)
        iou = class_iou(one.matrix())
        score = float(np.nanmean(iou)) if np.isfinite(iou).any() else 1.0  # nothing scored: not among the worst
        if len(self.found) == self.keep and score >= self.found[-1][0]:
            return
        import cv2

        picture = image.permute(1, 2, 0).cpu().numpy()
        scale = min(1.0, self.REPORT_SIDE / max(picture.shape[:2]))
        size = (max(1, round(picture.shape[1] * scale)), max(1, round(picture.shape[0] * scale)))

        def small(a: np.ndarray, interpolation: int) -> np.ndarray:
            return cv2.resize(a, size, interpolation=interpolation) if scale < 1 else a

        self.found.append((score, image_id, small(picture, cv2.INTER_AREA),
                           small(target.cpu().numpy().astype(np.uint8), cv2.INTER_NEAREST),
                           small(predicted.cpu().numpy().astype(np.uint8), cv2.INTER_NEAREST)))
        self.found = sorted(self.found, key=lambda f: f[0])[: self.keep]

    def images(self) -> list[tuple[float, int, np.ndarray, np.ndarray, np.ndarray]]:
        """(mean IoU, image id, picture, labels, prediction), worst first."""
        return self.found


@dataclass
class SegmentationMetrics(Metrics):
    stats: dict[str, float]  # mIoU, pixel_accuracy, mean_class_accuracy, fwIoU
    per_class: dict[str, float]  # IoU; NaN for a class in neither the labels nor the predictions
    per_class_accuracy: dict[str, float]
    confusion: np.ndarray = field(repr=False)
    classes: list[str] = field(default_factory=list)
    worst: list[tuple] = field(default_factory=list, repr=False)  # WorstImages.images()

    def as_json(self) -> dict:
        return {**self.stats, "per_class": {name: {"IoU": finite(iou), "accuracy": finite(self.per_class_accuracy[name])}
                                            for name, iou in self.per_class.items()},
                "confusion": self.confusion.tolist(), "classes": self.classes}

    def table(self) -> list:
        """What `train` and `eval` print: the stats line and per-class IoU."""
        from rich.table import Table

        table = Table("class", "IoU", "accuracy", "val pixels", title="per-class IoU")
        for (name, iou), total in zip(self.per_class.items(), self.confusion.sum(1)):
            table.add_row(name, f"{iou:.3f}", f"{self.per_class_accuracy[name]:.3f}", str(total))
        return ["  ".join(f"{k} {v:.4f}" for k, v in self.stats.items()), table]

    def examples(self, records: dict, classes: list[str], n: int = 8) -> list[tuple[str, np.ndarray]]:
        """The report's worst val images by mean IoU: the labels, then the prediction, over the picture."""
        from cvpipe.viz.draw import overlay_mask

        return [(f"{records[i].file_name}: mean IoU {score:.3f} (left: labels, right: prediction)",
                 np.concatenate([overlay_mask(picture, labels), overlay_mask(picture, predicted)], 1))
                for score, i, picture, labels, predicted in self.worst[:n]]

    def plots(self, out_dir: Path) -> list[str]:
        from cvpipe.viz import plots

        plots.confusion_matrix(self.confusion, self.classes, Path(out_dir) / "confusion_matrix.png", unit="pixels")
        plots.per_class_ap(self.per_class, Path(out_dir) / "per_class_iou.png", metric="IoU")
        return ["confusion_matrix.png", "per_class_iou.png"]


def segmentation_metrics(confusion: np.ndarray, classes: list[str], worst: list[tuple] | None = None
                         ) -> SegmentationMetrics:
    confusion = confusion.astype(np.float64)
    true, hits = confusion.sum(1), np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(true > 0, hits / true, np.nan)
    iou = class_iou(confusion)
    total = confusion.sum()
    frequency = true / total if total else true
    stats = {"mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
             "pixel_accuracy": float(hits.sum() / total) if total else 0.0,
             "mean_class_accuracy": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else 0.0,
             "fwIoU": float(np.nansum(frequency * iou))}
    return SegmentationMetrics(stats, dict(zip(classes, iou.tolist())), dict(zip(classes, accuracy.tolist())),
                               confusion.astype(np.int64), list(classes), list(worst or []))
