"""`cvpipe eval` and training's evaluations: the val split through the model, scored by the pipeline's task
(tasks/: COCO mAP for detection, top-1/top-5 for classification, IoU for segmentation, perceptual losses for
style transfer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.console import styled
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


def run_evaluation(config: PipelineConfig, weights: Path | None, *, json_path: Path | None, report: Path | None,
                   console: Console):
    """`cvpipe eval`: the checkpoint (None: the pipeline's ready `model.weights`) scored on the val split with the
    pipeline's test-time views; with `json_path` the metrics, the files that reproduce them and the plots
    there; with `report` one HTML page. Says on `console` what it scored, what it left out and what it wrote."""
    from cvpipe.engine.checkpoint import load_trained
    from cvpipe.engine.data import load_split
    from cvpipe.engine.progress import LoggedProgress
    from cvpipe.engine.runtime import exported_model
    from cvpipe.io.images import write_text
    from cvpipe.io.model_files import EXPORTED
    from cvpipe.io.outputs import prepare_file
    from cvpipe.ops.device import resolve_device

    if json_path:
        prepare_file(json_path, "--json")
    if report:
        prepare_file(report, "--report")
    if weights is not None and Path(weights).suffix in EXPORTED:  # an export, scored as it will run: on the CPU
        device = torch.device("cpu")
        model = exported_model(config, Path(weights))
        classes = model.classes
        console.print(f"weights: {weights} (exported, run by {model.runtime})")
        config = one_scale(config, console)
    else:
        device = resolve_device(config.train.device)
        model, classes = load_trained(config, weights, device)
        console.print(f"weights: {weights}" if weights is not None else
                      f"weights: {config.model.weights} (the pipeline's model.weights, untrained here)")
    dataset, warnings = load_split(config, "val", classes)
    for line in warnings:
        console.print(styled("data warning", "yellow", f" val: {line}"))
    if config.tta.enabled:
        from cvpipe.ops.tta import describe

        console.print(f"test-time augmentation: {describe(config.tta)} (--set tta.enabled=false: plain)")
    skipped: list[str] = []
    with LoggedProgress(console) as progress:
        metrics = evaluate(model, config, dataset, device, out_dir=json_path.parent if json_path else None,
                           progress=progress, tta=True, skipped=skipped)
    for line in skipped:
        console.print(styled("skipped", "yellow", f" {line} (left out of the metrics)"))
    if json_path:
        write_text(json_path, json.dumps(metrics.as_json(), indent=2))
        plots = metrics.plots(json_path.parent)
        console.print(f"plots → {json_path.parent}: {', '.join(plots)}")
    if report:
        from datetime import datetime

        from cvpipe.viz.report import write_report

        facts = [("pipeline", f"{config.name} ({config.task})"),
                 ("weights", str(weights) if weights is not None else f"{config.model.weights} (ready)"),
                 ("evaluated", f"{len(dataset)} {dataset.split} images in {dataset.root}"
                               + (f", {len(skipped)} unreadable left out" if skipped else "")),
                 ("written", datetime.now().isoformat(timespec="seconds"))]
        write_report(report, f"cvpipe eval: {config.name}", facts, metrics, {r.image_id: r for r in dataset.records},
                     classes)
        console.print(f"report → {report}")
    return metrics


def one_scale(config: PipelineConfig, console: Console) -> PipelineConfig:
    """An exported graph's input size is fixed inside it: test-time views at other scales need the checkpoint, so
    an export is scored without them (mirrors alone still run)."""
    from cvpipe.engine.runtime import multi_scale

    if not multi_scale(config):
        return config
    console.print(styled("note", "yellow", " an exported model runs at one input scale: scored without the "
                         "test-time views (compare with the checkpoint's `cvpipe eval ... --set tta.enabled=false`)"))
    return config.plain()
