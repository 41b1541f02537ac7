"""`cvpipe eval`: the val split through the model; detection is scored by COCOeval (pycocotools) and leaves
files a user can re-check, classification by top-1/top-5 and a confusion matrix, segmentation by IoU from a
confusion matrix accumulated on the device."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.data.formats.coco import to_coco
from cvpipe.data.records import Dataset
from cvpipe.engine.data import make_loader
from cvpipe.engine.inference import autocast, to_device
from cvpipe.engine.tta import detect_pipeline
from cvpipe.io.images import write_text
from cvpipe.metrics.classification import ClassificationMetrics, classification_metrics
from cvpipe.metrics.coco import CocoMetrics, detections_to_results, evaluate_coco
from cvpipe.metrics.segmentation import ConfusionMatrix, SegmentationMetrics, segmentation_metrics
from cvpipe.metrics.style import StylizeMetrics
from cvpipe.models.heads.base import stack_batch


def predict_split(model: nn.Module, config: PipelineConfig, dataset: Dataset, device: torch.device,
                  progress=None, *, tta: bool = False) -> tuple[list[dict], list[str]]:
    """COCO results for every image of `dataset` (eval augmentation applied; with `tta`, the pipeline's
    test-time augmentation), plus the images skipped."""
    model.eval()
    results, skipped = [], []
    loader = make_loader(config, dataset, "val")
    task = progress.add_task("eval", total=len(loader), info="") if progress else None
    for images, targets, bad in loader:
        skipped += bad
        if images:
            detections = detect_pipeline(model, images, device, config, augment=tta)
            results += detections_to_results(detections, [t["image_id"] for t in targets])
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    return results, skipped


def evaluate_detector(model: nn.Module, config: PipelineConfig, dataset: Dataset, device: torch.device,
                      *, out_dir: Path | None = None, progress=None, tta: bool = False,
                      skipped: list[str] | None = None) -> CocoMetrics:
    """COCO metrics; with `out_dir`, also writes `val_annotations.json` and `val_detections.json` there so the
    numbers can be reproduced with pycocotools alone."""
    results, bad = predict_split(model, config, dataset, device, progress, tta=tta)
    if skipped is not None:
        skipped += bad
    gt = to_coco(dataset)
    if out_dir is not None:
        write_text(Path(out_dir) / "val_annotations.json", json.dumps(gt))
        write_text(Path(out_dir) / "val_detections.json", json.dumps(results))
    return evaluate_coco(gt, results, dataset.classes, evaluator=config.eval.coco)


@torch.inference_mode()
def evaluate_classifier(model: nn.Module, config: PipelineConfig, dataset: Dataset, device: torch.device,
                        *, out_dir: Path | None = None, progress=None,
                        skipped: list[str] | None = None) -> ClassificationMetrics:
    """Top-1/top-5/per-class accuracy; with `out_dir`, also `val_predictions.csv` (file, true, predicted, score)."""
    model.eval()
    logits, labels, ids = [], [], []
    loader = make_loader(config, dataset, "val")
    task = progress.add_task("eval", total=len(loader), info="") if progress else None
    for images, targets, bad in loader:
        if skipped is not None:
            skipped += bad
        if images:
            with autocast(device, config.train.amp):
                logits.append(model(to_device(images, device)).float().cpu())
            labels += [int(t["label"]) for t in targets]
            ids += [t["image_id"] for t in targets]
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    logits = torch.cat(logits) if logits else torch.zeros(0, len(dataset.classes))
    metrics = classification_metrics(logits, torch.tensor(labels, dtype=torch.long), dataset.classes)
    if out_dir is not None:
        names = {r.image_id: r.file_name for r in dataset.records}
        scores, predicted = logits.softmax(1).max(1)
        rows = ["file,true,predicted,score"] + [
            f"{names[i]},{dataset.classes[t]},{dataset.classes[p]},{s:.5f}"
            for i, t, p, s in zip(ids, labels, predicted.tolist(), scores.tolist())]
        write_text(Path(out_dir) / "val_predictions.csv", "\n".join(rows) + "\n")
    return metrics


@torch.inference_mode()
def evaluate_segmenter(model: nn.Module, config: PipelineConfig, dataset: Dataset, device: torch.device,
                       *, progress=None, skipped: list[str] | None = None) -> SegmentationMetrics:
    model.eval()
    confusion = ConfusionMatrix(len(dataset.classes), config.data.ignore_index, device)
    loader = make_loader(config, dataset, "val")
    task = progress.add_task("eval", total=len(loader), info="") if progress else None
    for images, targets, bad in loader:
        if skipped is not None:
            skipped += bad
        if images:
            with autocast(device, config.train.amp):
                logits = model(to_device(images, device))
            confusion.update(logits.argmax(1), torch.stack([t["mask"] for t in targets]).to(device))
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    return segmentation_metrics(confusion.matrix(), dataset.classes)


@torch.inference_mode()
def evaluate_stylizer(model: nn.Module, config: PipelineConfig, dataset: Dataset, device: torch.device,
                      *, progress=None, skipped: list[str] | None = None) -> StylizeMetrics:
    """Mean perceptual losses of the stylized val images (the weighted total and the unweighted parts), and the
    style loss of the val images as they are (what stylizing starts from)."""
    model.eval()
    cfg = config.model.head
    sums, count = {"content": 0.0, "style": 0.0, "tv": 0.0, "input_style": 0.0}, 0
    loader = make_loader(config, dataset, "val")
    task = progress.add_task("eval", total=len(loader), info="") if progress else None
    for images, _, bad in loader:
        if skipped is not None:
            skipped += bad
        if images:
            x = stack_batch(to_device(images, device))
            parts = model.perceptual_losses(x, model(x))
            parts["input_style"] = model.perceptual_losses(x, x)["style"]  # the content image's own style loss
            for k, v in parts.items():
                sums[k] += float(v) * len(images)
            count += len(images)
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    mean = {k: v / max(count, 1) for k, v in sums.items()}
    total = cfg.content_weight * mean["content"] + cfg.style_weight * mean["style"] + cfg.tv_weight * mean["tv"]
    return StylizeMetrics({"perceptual_loss": total, "content_loss": mean["content"], "style_loss": mean["style"],
                           "input_style_loss": mean["input_style"]})


def evaluate(model: nn.Module, config: PipelineConfig, dataset: Dataset, device: torch.device, *,
             out_dir: Path | None = None, progress=None, tta: bool = False, skipped: list[str] | None = None
             ) -> CocoMetrics | ClassificationMetrics | SegmentationMetrics | StylizeMetrics:
    """The pipeline task's evaluation; `tta` applies the pipeline's test-time augmentation (`cvpipe eval`; the
    evaluations during training stay plain and fast). Val images that could not be read are appended to
    `skipped` ("file: reason"): the metrics leave them out, so the caller must say so."""
    if config.task == "stylize":
        return evaluate_stylizer(model, config, dataset, device, progress=progress, skipped=skipped)
    if config.task == "segment":
        return evaluate_segmenter(model, config, dataset, device, progress=progress, skipped=skipped)
    if config.task == "classify":
        return evaluate_classifier(model, config, dataset, device, out_dir=out_dir, progress=progress, skipped=skipped)
    return evaluate_detector(model, config, dataset, device, out_dir=out_dir, progress=progress, tta=tta,
                             skipped=skipped)
