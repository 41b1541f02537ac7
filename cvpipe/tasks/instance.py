"""Instance segmentation: detection (detect.py) whose every box also has a mask. COCO mask (segm) and box mAP;
`results.json` with RLE masks, `detections.csv` per instance, `instances.csv` per image and overlays; masks on
video with track ids; a one-image ONNX graph with a masks output."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.data.augment import build_augment, uses_mosaic
from cvpipe.data.formats.coco import to_coco
from cvpipe.data.records import Dataset, PlacedMask, Record, union_area
from cvpipe.data.samples import InstanceSamples, WindowedInstanceSamples
from cvpipe.errors import DataError
from cvpipe.io.images import JsonArray, atomic_open, write_text
from cvpipe.io.tables import csv_writer
from cvpipe.metrics.coco import COCO_STATS, InstanceMetrics, evaluate_coco
from cvpipe.ops.detections import Detections
from cvpipe.ops.inference import detect
from cvpipe.ops.slicing import instances_sliced, slices_needed, whole_or_sliced, window_size
from cvpipe.tasks import register_task
from cvpipe.tasks.base import Batches, FrameJob, PredictJob
from cvpipe.tasks.detect import (
    DetectTask,
    coco_options,
    image_index,
    image_record,
    matched_difference,
    write_annotated,
)

# the 12 COCO stats of the masks (COCOeval iouType segm), then those of the boxes
INSTANCE_STATS = COCO_STATS + tuple(f"box_{stat}" for stat in COCO_STATS)


class OneImageInstances(nn.Module):
    """An instance model's `[{boxes, scores, labels, masks}]` for one image as a tuple, which ONNX outputs need."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model([images[0]])[0]  # a batch of one image, as OneImageDetections
        return out["boxes"], out["scores"], out["labels"], out["masks"]


def binary_masks(probabilities: np.ndarray, thresh: float) -> np.ndarray:
    """Mask probabilities [K, 1, H, W] → uint8 [K, H, W], in where probability ≥ `thresh`."""
    return (probabilities[:, 0] >= thresh).astype(np.uint8)


def mask_results(found: Detections, rles: list[dict], image_id: int) -> list[dict]:
    """One image's instances, their masks as RLE, → COCO segm results (no `bbox`, so the evaluators take each
    result's area from its mask, as detectron2 writes them for segm)."""
    return [{"image_id": int(image_id), "category_id": int(label) + 1, "segmentation": rle, "score": round(float(s), 5)}
            for rle, s, label in zip(rles, found.scores, found.labels)]


class InstanceTask(DetectTask):
    name = "instance"
    description = "instance segmentation"
    tta = False  # views of masks are not fused (yet): `validate` says so where tta.enabled
    tiles = True  # large images in slices, masks merged across the seams (ops/slicing.py)
    stats = INSTANCE_STATS
    counted = "instances"
    export_outputs = ("boxes", "scores", "labels", "masks")
    eval_files = "mask and box results (COCO) and ground truth"
    seam_merge = "nmm"  # a mask a seam cut is joined again from its pieces (docs/guide/large-images.md: nuclei, 0.943 vs 0.790 AP50)

    def settle(self, config: PipelineConfig) -> tuple[dict[tuple, Any], list[tuple[tuple, str]]]:
        chosen, problems = super().settle(config)
        try:
            mosaic = uses_mosaic(build_augment(config.augment, "train"))
        except ValueError:  # an entry albumentations refuses: the augmentation check reports it
            mosaic = False
        if mosaic:
            problems.append((("augment", "train"), "Mosaic cannot carry instance masks; remove it from this pipeline"))
        if config.tiling.merge == "wbf":
            problems.append((("tiling", "merge"), "weighted boxes fusion has no masks to fuse; use nms (each object's "
                             "best mask) or nmm (the union of its masks across the seams)"))
        return chosen, problems

    def prelabel(self, entry: dict, path: Path, file_name: str, image_id: int) -> tuple[Record, np.ndarray]:
        """The detections with their masks (COCO RLE, as the journal keeps them)."""
        record, scores = super().prelabel(entry, path, file_name, image_id)
        record.segmentations = list(entry["masks"]) if len(record.boxes) else None
        return record, scores

    def samples(self, config: PipelineConfig, dataset: Dataset, transform, *, train: bool = False) -> InstanceSamples:
        if any(len(r.boxes) for r in dataset.records) and all(r.segmentations is None for r in dataset.records):
            raise DataError(f"{dataset.root} ({dataset.split}): data.format {config.data.format} gives boxes but no "
                            "instance masks; instance segmentation needs COCO polygons or RLE (data.format: coco) or "
                            "instance-mask PNGs (data.format: instance_masks)")
        windowed = [slices_needed(config, r.height, r.width) is not None for r in dataset.records]
        if train and any(windowed):  # random windows of the images `tiling:` slices at inference
            return WindowedInstanceSamples(dataset, transform, size=window_size(config), config=config.tiling,
                                           windowed=windowed)
        return InstanceSamples(dataset, transform)

    def _found(self, model, images, config: PipelineConfig, device, conf: float = 0.0) -> list[dict]:
        """Each image's instances scoring at least `conf` (whole, or from its slices where `tiling:` slices it):
        `found`, the Detections with their masks as PlacedMask crops, and the masks as RLE with their areas."""
        thresh = config.model.head.mask_thresh

        def run(batch) -> list[Detections]:
            found = []
            for output in detect(model, batch, device, amp=config.train.amp) if batch else []:
                kept = Detections.from_output(output).with_masks(output["masks"].numpy()).at_least(conf)
                found.append(kept.with_masks([PlacedMask.of(mask) for mask in binary_masks(kept.masks, thresh)]))
            return found

        return [{"found": found, "masks": [m.rle(*image.shape[-2:]) for m in found.masks],
                 "areas": [m.area for m in found.masks]}
                for image, found in zip(images, whole_or_sliced(images, config, run, instances_sliced))]

    def evaluate(self, model: nn.Module, config: PipelineConfig, dataset: Dataset, batches: Batches,
                 device: torch.device, *, out_dir: Path | None, tta: bool) -> InstanceMetrics:
        """COCO segm and bbox metrics; with `out_dir`, `val_annotations.json`, `val_segmentations.json` (segm
        results) and `val_detections.json` (bbox results) there, for pycocotools alone to reproduce them."""
        model.eval()
        boxes, masks = [], []
        for images, targets in batches:
            found = self._found(model, images, config, device)
            ids = [t["image_id"] for t in targets]
            for f, image_id in zip(found, ids):
                boxes += f["found"].coco_results(image_id)
                masks += mask_results(f["found"], f["masks"], image_id)
        gt = to_coco(dataset)
        if out_dir is not None:
            write_text(Path(out_dir) / "val_annotations.json", json.dumps(gt))
            write_text(Path(out_dir) / "val_segmentations.json", json.dumps(masks))
            write_text(Path(out_dir) / "val_detections.json", json.dumps(boxes))
        mask_metrics = evaluate_coco(json.loads(json.dumps(gt)), masks, dataset.classes, iou_type="segm",
                                     **coco_options(config))
        return InstanceMetrics.of(mask_metrics, evaluate_coco(gt, boxes, dataset.classes, **coco_options(config)))

    def predict(self, model: nn.Module, images: list[torch.Tensor], names: list[str], job: PredictJob) -> list[dict]:
        """Instances scoring at least `conf`, masks as RLE in the journal; overlays under images/."""
        entries = []
        for name, image, det in zip(names, images, self._found(model, images, job.config, job.device, job.conf)):
            found = det["found"]
            if job.save_images:
                job.write(write_annotated, job.out / "images" / name, image, found, job.classes)
            entries.append({"file": name, "width": int(image.shape[2]), "height": int(image.shape[1]),
                            **found.journal(), "masks": det["masks"],
                            "areas": det["areas"]})
        return entries

    def write_results(self, out: Path, finished: Iterable[tuple[int, str, dict]], classes: list[str],
                      used: dict) -> list[str]:
        with (atomic_open(out / "results.json") as results_file, JsonArray(results_file) as results,
              image_index(out, classes, used) as images, atomic_open(out / "detections.csv") as per_instance,
              atomic_open(out / "instances.csv") as per_image):
            instances, summary = csv_writer(per_instance), csv_writer(per_image)
            instances.writerow(["file", "class", "score", "x1", "y1", "x2", "y2", "mask_area"])
            summary.writerow(["file", "instances", "mask_area", "mask_fraction"])
            for image_id, name, entry in finished:
                images.add(image_record(image_id, name, entry))
                found = Detections.from_journal(entry)
                for box, rle in zip(found.coco_results(image_id), entry["masks"]):
                    results.add({**box, "segmentation": rle})
                for (x1, y1, x2, y2), score, label, area in zip(found.boxes.tolist(), found.scores.tolist(),
                                                                found.labels, entry["areas"]):
                    instances.writerow([name, classes[label], score, x1, y1, x2, y2, area])
                # the union of the masks: overlapping instances count their shared pixels once
                union = union_area(entry["masks"])
                summary.writerow([name, len(found), int(union),
                                  round(union / (entry["width"] * entry["height"]), 5)])
        return ["results.json (COCO results, RLE masks)", "images.json", "detections.csv", "instances.csv"]

    def frame_from(self, output: dict, image: np.ndarray, job: FrameJob) -> tuple[np.ndarray, dict]:
        """One frame's (picture, JSON-line fields): the detector's output with its masks, which follow their rows
        through tracking and the confidence filter."""
        masks = binary_masks(output["masks"].numpy(), job.config.model.head.mask_thresh)
        return self.shown(Detections.from_output(output).with_masks(masks), image, job)

    def export_graph(self, model: nn.Module) -> nn.Module:
        return OneImageInstances(model).eval()

    def export_difference(self, model: nn.Module, runtime, x: torch.Tensor) -> float:
        """Scores, boxes and mask probabilities of matched instances (detect.matched_difference)."""
        ours, theirs = model([x[0]])[0], runtime([x[0]])[0]
        worst, nearest = matched_difference(ours, theirs)
        if worst == float("inf") or not len(ours["scores"]):
            return worst
        return max(worst, (ours["masks"] - theirs["masks"][nearest]).abs().max().item())

register_task(InstanceTask())
