"""Classification: one class per image; top-1/top-5 and a confusion matrix; `predictions.csv` with the top five
classes; the top class written on video frames; an NCHW → logits graph."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.data.records import Dataset, Record
from cvpipe.data.samples import ImageSamples
from cvpipe.io.images import atomic_open, image_size
from cvpipe.io.tables import csv_writer
from cvpipe.metrics.classification import ClassificationMetrics, classification_metrics
from cvpipe.ops.inference import autocast, classify, to_device
from cvpipe.tasks import register_task
from cvpipe.tasks.base import Batches, FrameJob, PredictJob, Task

TOP_K = 5  # classes per image in predictions.csv and the video's JSON lines


CLASSIFY_STATS = ("top1", "top5", "mean_class_accuracy")


def top_classes(model: nn.Module, images: list[torch.Tensor], device: torch.device, amp: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, labels) of the TOP_K most likely classes per image, softmax scores, on the CPU."""
    probabilities = classify(model, images, device, amp=amp)
    return probabilities.topk(min(TOP_K, probabilities.shape[1]), dim=1)


class ClassifyTask(Task):
    name = "classify"
    description = "classification"
    stats = CLASSIFY_STATS
    headline = ("top1", "top5")
    export_check = "top1"
    eval_files = "val_predictions.csv"

    def samples(self, config: PipelineConfig, dataset: Dataset, transform, *, train: bool = False) -> ImageSamples:
        return ImageSamples(dataset, transform)

    labels_objects = True

    def prelabel(self, entry: dict, path: Path, file_name: str, image_id: int) -> tuple[Record, np.ndarray]:
        """The most likely class, with its score."""
        width, height = image_size(path)
        record = Record(path=path, file_name=file_name, image_id=image_id, width=width, height=height,
                        label=int(entry["labels"][0]))
        return record, np.asarray(entry["scores"][:1], np.float64)

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, config: PipelineConfig, dataset: Dataset, batches: Batches,
                 device: torch.device, *, out_dir: Path | None, tta: bool) -> ClassificationMetrics:
        """Top-1/top-5/per-class accuracy; with `out_dir`, also `val_predictions.csv` (file, true, predicted, score)."""
        model.eval()
        logits, labels, ids = [], [], []
        for images, targets in batches:
            with autocast(device, config.train.amp):
                logits.append(model(to_device(images, device)).float().cpu())
            labels += [int(t["label"]) for t in targets]
            ids += [t["image_id"] for t in targets]
        logits = torch.cat(logits) if logits else torch.zeros(0, len(dataset.classes))
        metrics = classification_metrics(logits, torch.tensor(labels, dtype=torch.long), dataset.classes, ids)
        if out_dir is not None:
            names = {r.image_id: r.file_name for r in dataset.records}
            scores, predicted = logits.softmax(1).max(1)
            with atomic_open(Path(out_dir) / "val_predictions.csv") as f:
                writer = csv_writer(f)
                writer.writerow(["file", "true", "predicted", "score"])
                writer.writerows([names[i], dataset.classes[t], dataset.classes[p], round(s, 5)]
                                 for i, t, p, s in zip(ids, labels, predicted.tolist(), scores.tolist()))
        return metrics

    def predict(self, model: nn.Module, images: list[torch.Tensor], names: list[str], job: PredictJob) -> list[dict]:
        if not images:
            return []
        scores, labels = top_classes(model, images, job.device, job.config.train.amp)
        return [{"file": name, "labels": label.tolist(), "scores": np.round(score.numpy().astype(np.float64), 5).tolist()}
                for name, label, score in zip(names, labels, scores)]

    def write_results(self, out: Path, finished: Iterable[tuple[int, str, dict]], classes: list[str],
                      used: dict) -> list[str]:
        k = min(TOP_K, len(classes))
        with atomic_open(out / "predictions.csv") as rows:
            writer = csv_writer(rows)
            writer.writerow(["file", *(f"{field}{i}" for i in range(1, k + 1) for field in ("class", "score"))])
            for _, name, entry in finished:
                writer.writerow([name, *(v for label, score in zip(entry["labels"], entry["scores"])
                                         for v in (classes[label], score))])
        return [f"predictions.csv (top-{k} classes and scores)"]

    def frame(self, model: nn.Module, image: np.ndarray, tensor: torch.Tensor, job: FrameJob) -> tuple[np.ndarray, dict]:
        scores, labels = (v[0] for v in top_classes(model, [tensor], job.device, job.config.train.amp))
        shown = image.copy()
        text = f"{job.classes[labels[0]]} {scores[0]:.2f}"
        cv2.putText(shown, text, (8, shown.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2, cv2.LINE_AA)
        return shown, {"labels": [job.classes[k] for k in labels],
                       "scores": np.round(scores.numpy().astype(np.float64), 5).tolist()}


register_task(ClassifyTask())
