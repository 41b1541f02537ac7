"""Classification metrics from logits: top-1, top-5, per-class accuracy and the confusion matrix.

Hand-written: a confusion matrix is one `bincount`, and pulling in a metrics library for it would add a
dependency for three lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cvpipe.metrics.base import Metrics


@dataclass
class ClassificationMetrics(Metrics):
    stats: dict[str, float]  # top1, top5 (top-k with k = min(5, classes)), mean_class_accuracy
    per_class: dict[str, float]  # accuracy (recall) per class; NaN where the class has no val image
    confusion: np.ndarray = field(repr=False)  # [true, predicted] counts
    classes: list[str] = field(default_factory=list)
    # the most confident mistakes, worst first: (image id, true, predicted, its probability)
    mistakes: list[tuple[int, int, int, float]] = field(default_factory=list, repr=False)

    def as_json(self) -> dict:
        return {**self.stats,
                "per_class": {name: None if np.isnan(acc) else float(acc) for name, acc in self.per_class.items()},
                "confusion": self.confusion.tolist(), "classes": self.classes}

    def table(self) -> list:
        """What `train` and `eval` print: the stats line and per-class accuracy."""
        from rich.table import Table

        table = Table("class", "accuracy", "val images", title="per-class accuracy")
        for (name, acc), total in zip(self.per_class.items(), self.confusion.sum(1)):
            table.add_row(name, f"{acc:.3f}", str(total))
        return ["  ".join(f"{k} {v:.4f}" for k, v in self.stats.items()), table]

    def examples(self, records: dict, classes: list[str], n: int = 8) -> list[tuple[str, np.ndarray]]:
        """The report's worst val images: the most confident mistakes. `records`: image id → Record."""
        from cvpipe.io.images import read_image

        return [(f"{records[i].file_name}: true {classes[t]}, predicted {classes[p]} ({score:.2f})",
                 read_image(records[i].path)) for i, t, p, score in self.mistakes[:n]]

    def plots(self, out_dir: Path) -> list[str]:
        from cvpipe.viz import plots

        plots.confusion_matrix(self.confusion, self.classes, Path(out_dir) / "confusion_matrix.png")
        plots.per_class_ap(self.per_class, Path(out_dir) / "per_class_accuracy.png", metric="accuracy")
        return ["confusion_matrix.png", "per_class_accuracy.png"]


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str],
                           image_ids: list[int] | None = None, keep: int = 16) -> ClassificationMetrics:
    """With `image_ids`, the `keep` most confident mistakes are kept for the report."""
    k = len(classes)
    if len(labels) == 0:
        raise ValueError("classification_metrics: no val images were scored")
    predicted = logits.argmax(1)
    top5 = logits.topk(min(5, k), dim=1).indices
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).reshape(k, k).numpy()
    totals = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(totals > 0, np.diag(confusion) / totals, np.nan)
    stats = {"top1": float((predicted == labels).float().mean()),
             "top5": float((top5 == labels[:, None]).any(1).float().mean()),
             "mean_class_accuracy": float(np.nanmean(per_class))}
    mistakes = []
    if image_ids is not None:
        probability = logits.softmax(1).max(1).values
        wrong = torch.nonzero(predicted != labels).flatten()
        worst = wrong[probability[wrong].argsort(descending=True)][:keep].tolist()
        mistakes = [(image_ids[i], int(labels[i]), int(predicted[i]), float(probability[i])) for i in worst]
    return ClassificationMetrics(stats, dict(zip(classes, per_class.tolist())), confusion, list(classes), mistakes)
