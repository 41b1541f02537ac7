"""`cvpipe eval`: detections on the val split, COCOeval through pycocotools, files a user can re-check."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.data.formats.coco import to_coco
from cvpipe.data.records import Dataset
from cvpipe.engine.data import make_loader
from cvpipe.engine.inference import detect
from cvpipe.io.images import write_text
from cvpipe.metrics.coco import CocoMetrics, detections_to_results, evaluate_coco


def predict_split(model: nn.Module, config: PipelineConfig, dataset: Dataset, device: torch.device,
                  progress=None) -> tuple[list[dict], list[str]]:
    """COCO results for every image of `dataset` (eval augmentation applied), plus the images skipped."""
    model.eval()
    results, skipped = [], []
    loader = make_loader(config, dataset, "val")
    task = progress.add_task("eval", total=len(loader), info="") if progress else None
    for images, targets, bad in loader:
        skipped += bad
        if images:
            detections = detect(model, images, device, amp=config.train.amp)
            results += detections_to_results(detections, [t["image_id"] for t in targets])
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    return results, skipped


def evaluate_detector(model: nn.Module, config: PipelineConfig, dataset: Dataset, device: torch.device,
                      *, out_dir: Path | None = None, progress=None) -> CocoMetrics:
    """COCO metrics; with `out_dir`, also writes `val_annotations.json` and `val_detections.json` there so the
    numbers can be reproduced with pycocotools alone."""
    results, _ = predict_split(model, config, dataset, device, progress)
    gt = to_coco(dataset)
    if out_dir is not None:
        write_text(Path(out_dir) / "val_annotations.json", json.dumps(gt))
        write_text(Path(out_dir) / "val_detections.json", json.dumps(results))
    return evaluate_coco(gt, results, dataset.classes)
