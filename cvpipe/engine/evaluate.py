"""`cvpipe eval` and training's evaluations: the val split through the model, scored by the pipeline's task
(tasks/: COCO mAP for detection, top-1/top-5 for classification, IoU for segmentation, perceptual losses for
style transfer)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.data.records import Dataset
from cvpipe.engine.data import make_loader
from cvpipe.tasks import get_task


def _batches(loader, skipped: list[str] | None, progress) -> Iterator[tuple[list, list]]:
    """The loader's non-empty batches as (images, targets); the skip reasons go to `skipped`."""
    task = progress.add_task("eval", total=len(loader), info="") if progress else None
    for images, targets, bad in loader:
        if skipped is not None:
            skipped += bad
        if images:
            yield images, targets
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)


def evaluate(model: nn.Module, config: PipelineConfig, dataset: Dataset, device: torch.device, *,
             out_dir: Path | None = None, progress=None, tta: bool = False, skipped: list[str] | None = None):
    """The pipeline task's metrics (`.stats`, `.as_json()`, `.table()`, `.plots()`); `tta` applies the pipeline's
    test-time augmentation (`cvpipe eval`; the evaluations during training stay plain and fast). Val images that
    could not be read are appended to `skipped` ("file: reason"): the metrics leave them out, so the caller must
    say so."""
    batches = _batches(make_loader(config, dataset, "val"), skipped, progress)
    return get_task(config.task).evaluate(model, config, dataset, batches, device, out_dir=out_dir, tta=tta)
