"""Semantic segmentation: a class per pixel; IoU/mIoU from one confusion matrix; label PNGs, overlays and
`segmentation.csv`; coloured overlays on video; an NCHW → logits graph."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.data.records import Dataset
from cvpipe.data.samples import SegmentationSamples, WindowedSegmentationSamples
from cvpipe.io.images import atomic_open, write_image
from cvpipe.io.tables import csv_writer
from cvpipe.metrics.segmentation import (
    ConfusionMatrix,
    SegmentationMetrics,
    WorstImages,
    segmentation_metrics,
)
from cvpipe.ops.inference import autocast, segment, to_device
from cvpipe.ops.slicing import segment_sliced, slices_needed, whole_or_sliced, window_size
from cvpipe.tasks import register_task
from cvpipe.tasks.base import Batches, FrameJob, PredictJob, Task
from cvpipe.viz.draw import overlay_mask

SEGMENT_STATS = ("mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU")


def _write_overlay(path: Path, image: torch.Tensor, labels: np.ndarray) -> None:
    write_image(path, overlay_mask(image.permute(1, 2, 0).numpy(), labels))


class SegmentTask(Task):
    name = "segment"
    description = "segmentation"
    stats = SEGMENT_STATS
    headline = ("mIoU", "pixel_accuracy")
    export_check = "mIoU"
    tiles = True  # with a tiling.size: large images are labelled slice by slice (ops/slicing.py)

    def samples(self, config: PipelineConfig, dataset: Dataset, transform, *, train: bool = False) -> SegmentationSamples:
        """Training: random windows (`tiling.window`, the slice side by default) of the images `tiling:` slices at
        inference."""
        windowed = [slices_needed(config, r.height, r.width) is not None for r in dataset.records]
        if train and any(windowed):
            return WindowedSegmentationSamples(dataset, transform, config.data.ignore_index, size=window_size(config),
                                               config=config.tiling, windowed=windowed)
        return SegmentationSamples(dataset, transform, config.data.ignore_index)

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, config: PipelineConfig, dataset: Dataset, batches: Batches,
                 device: torch.device, *, out_dir: Path | None, tta: bool) -> SegmentationMetrics:
        model.eval()
        confusion = ConfusionMatrix(len(dataset.classes), config.data.ignore_index, device)
        worst = WorstImages(len(dataset.classes), config.data.ignore_index)
        for images, targets in batches:
            if any(slices_needed(config, *image.shape[-2:]) for image in images):  # whole large images, sliced
                predicted = [labels.to(device).long() for labels in self._labels(model, images, config, device)]
            else:
                with autocast(device, config.train.amp):
                    predicted = list(model(to_device(images, device)).argmax(1))
            for image, labels, target in zip(images, predicted, targets):
                mask = target["mask"].to(device)
                confusion.update(labels[None], mask[None])
                worst.update(target["image_id"], image, labels, mask)
        return segmentation_metrics(confusion.matrix(), dataset.classes, worst.images())

    def _labels(self, model: nn.Module, images: list[torch.Tensor], config: PipelineConfig, device) -> list[torch.Tensor]:
        """Each image's label mask: whole, or from its slices where `tiling:` slices it."""
        def run(batch):
            return segment(model, batch, device, amp=config.train.amp)

        return whole_or_sliced(images, config, run, segment_sliced)

    def output_folders(self, save_images: bool) -> list[str]:
        return ["masks/", *(["overlays/"] if save_images else [])]

    def predict(self, model: nn.Module, images: list[torch.Tensor], names: list[str], job: PredictJob) -> list[dict]:
        """Label PNGs (class index per pixel) under masks/, colour overlays under overlays/, pixel counts per class."""
        entries = []
        masks = self._labels(model, images, job.config, job.device) if images else []
        for name, image, mask in zip(names, images, masks):
            labels = mask.numpy()
            stem = Path(name).with_suffix(".png")
            job.write(write_image, job.out / "masks" / stem, labels)
            if job.save_images:
                job.write(_write_overlay, job.out / "overlays" / stem, image, labels)
            entries.append({"file": name, "pixels": np.bincount(labels.ravel()).tolist()})
        return entries

    def write_results(self, out: Path, finished: Iterable[tuple[int, str, dict]], classes: list[str],
                      used: dict) -> list[str]:
        with atomic_open(out / "segmentation.csv") as rows:
            writer = csv_writer(rows)
            writer.writerow(["file", "mask", *classes])  # the share of the image's pixels given to each class
            for _, name, entry in finished:
                counts = np.zeros(len(classes))
                counts[: len(entry["pixels"])] = entry["pixels"][: len(classes)]
                shares = counts / max(counts.sum(), 1)
                writer.writerow([name, str(Path("masks") / Path(name).with_suffix(".png")),
                                 *np.round(shares, 5).tolist()])
        return ["segmentation.csv (class shares)"]

    def frame(self, model: nn.Module, image: np.ndarray, tensor: torch.Tensor, job: FrameJob) -> tuple[np.ndarray, dict]:
        labels = segment(model, [tensor], job.device, amp=job.config.train.amp)[0].numpy()
        counts = np.bincount(labels.ravel(), minlength=len(job.classes))[: len(job.classes)]
        shares = {name: round(float(c) / labels.size, 5) for name, c in zip(job.classes, counts) if c}
        return overlay_mask(image, labels), {"class_shares": shares}


register_task(SegmentTask())
