"""Detection: boxes, scores and labels per image; COCO box mAP; `results.json` (COCO results), `images.json`,
`detections.csv` and annotated copies; tracked boxes on video; a one-image ONNX graph."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.data.formats.coco import to_coco
from cvpipe.data.records import Dataset, Record
from cvpipe.data.samples import DetectionSamples, WindowedDetectionSamples
from cvpipe.errors import DataError
from cvpipe.io.geo import detections_geojson, read_georeference
from cvpipe.io.images import JsonArray, atomic_open, failure_reason, scaled, write_image, write_text
from cvpipe.io.tables import csv_writer
from cvpipe.metrics.coco import COCO_STATS, CocoMetrics, evaluate_coco
from cvpipe.models.proposals import proposals_for
from cvpipe.ops.detections import Detections
from cvpipe.ops.inference import detect
from cvpipe.ops.slicing import slices_needed, window_size
from cvpipe.ops.tta import detect_pipeline
from cvpipe.tasks import register_task
from cvpipe.tasks.base import Batches, FrameJob, PredictJob, Task
from cvpipe.viz.draw import draw_detections


def counted(job: FrameJob, image: np.ndarray, found: Detections, record: dict, shown: np.ndarray
            ) -> tuple[np.ndarray, dict]:
    """A video frame's tracked objects in its record (`track_id`) and, with video.lines / video.zones, counted
    (ops/counting.py): the counts join the record and the picture."""
    if found.track_ids is not None:
        record["track_id"] = found.track_ids.tolist()
    if job.counting is not None:
        record |= job.counting.update(image.shape, found)
        shown = job.counting.draw(shown)
    return shown, record


def coco_options(config: PipelineConfig) -> dict:
    """`evaluate_coco`'s settings from the pipeline's `eval:`."""
    settings = config.eval
    return {"evaluator": settings.coco, "area_ranges": settings.area_ranges, "iou": settings.iou, "conf": settings.conf}


class OneImageDetections(nn.Module):
    """A detector's `[{boxes, scores, labels}]` for a batch of one image ([1, 3, H, W], the layout every runtime
    expects) as a tuple, which ONNX outputs need."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model([images[0]])[0]
        return out["boxes"], out["scores"], out["labels"]


def matched_difference(ours: dict, theirs: dict) -> tuple[float, torch.Tensor]:
    """(the largest |score or box coordinate difference| between each detection of `ours` and its nearest of
    `theirs` with the same label, and which of theirs that is), or infinity when the counts differ. Matched as
    sets, not by rank: near-equal scores (an untrained head's) may sort differently on two backends."""
    if len(ours["scores"]) != len(theirs["scores"]):
        return float("inf"), torch.zeros(0, dtype=torch.long)
    if not len(ours["scores"]):
        return 0.0, torch.zeros(0, dtype=torch.long)
    distance = torch.maximum((ours["boxes"][:, None] - theirs["boxes"][None]).abs().amax(2),
                             (ours["scores"][:, None] - theirs["scores"][None]).abs())
    distance[ours["labels"][:, None] != theirs["labels"][None]] = float("inf")
    nearest = distance.min(1)
    return max(nearest.values.max().item(), distance.min(0).values.max().item()), nearest.indices


ANNOTATED_MAX_SIDE = 4096  # annotated copies of larger images are downscaled to this (a 10,000² PNG helps no one)


def write_annotated(path: Path, image: torch.Tensor, found: Detections, classes: list[str]) -> None:
    """An annotated copy (with instance masks where given), downscaled to ANNOTATED_MAX_SIDE."""
    picture = image.permute(1, 2, 0).numpy()
    scale = min(1.0, ANNOTATED_MAX_SIDE / max(picture.shape[:2]))
    if scale < 1.0:
        picture = scaled(picture, scale)
        masks = [m.scaled(scale) for m in found.masks] if found.masks is not None else None
        found = replace(found, boxes=found.boxes * scale, masks=masks)
    write_image(path, draw_detections(picture, found, classes))


def image_record(image_id: int, name: str, entry: dict) -> dict:
    """An image of images.json, as COCO lists it."""
    return {"id": image_id, "file_name": name, "width": entry["width"], "height": entry["height"]}


@contextmanager
def image_index(out: Path, classes: list[str], used: dict) -> Iterator[JsonArray]:
    """images.json (`{"images": [...], "categories": [...], **used}`), its images added one at a time."""
    with atomic_open(out / "images.json") as f:
        f.write('{"images": ')
        with JsonArray(f) as images:
            yield images
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
        f.write(", " + json.dumps({"categories": categories, **used})[1:])  # the object's other members


class DetectTask(Task):
    name = "detect"
    description = "detection"
    tta = True
    tiles = True
    stats = COCO_STATS
    headline = ("AP", "AP50")
    counted = "detections"
    eval_transform = False  # detectors resize inside the model (SSD and YOLO in uint8 before it)
    tracks = True
    thresholded = True
    export_input = "image"
    export_outputs = ("boxes", "scores", "labels")
    export_check = "AP50"
    eval_files = "detections (COCO results) and ground truth"
    seam_merge = "nms"  # tiling.merge where the pipeline leaves it unset
    cpu_batch = 1  # batching detectors is slower on a CPU (benches/inference_speed.py)

    def settle(self, config: PipelineConfig) -> tuple[dict[tuple, Any], list[tuple[tuple, str]]]:
        chosen, problems = super().settle(config)
        if config.tta.iou is None:  # views are fused at the head's own NMS overlap
            chosen[("tta", "iou")] = config.model.head.nms_thresh
        if config.tiling.merge is None:
            chosen[("tiling", "merge")] = self.seam_merge
        return chosen, problems

    def samples(self, config: PipelineConfig, dataset: Dataset, transform, *, train: bool = False) -> DetectionSamples:
        """Training: random windows (`tiling.window`, the slice side by default) of the images `tiling:` slices at
        inference."""
        proposals = proposals_for(config)
        windowed = [slices_needed(config, r.height, r.width) is not None for r in dataset.records]
        if train and any(windowed):
            return WindowedDetectionSamples(dataset, transform, proposals, size=window_size(config),
                                            config=config.tiling, windowed=windowed)
        return DetectionSamples(dataset, transform, proposals)

    def evaluate(self, model: nn.Module, config: PipelineConfig, dataset: Dataset, batches: Batches,
                 device: torch.device, *, out_dir: Path | None, tta: bool) -> CocoMetrics:
        """COCO metrics; with `out_dir`, also `val_annotations.json` and `val_detections.json` there, so the numbers
        can be reproduced with pycocotools alone."""
        model.eval()
        results = []
        for images, targets in batches:
            detections = detect_pipeline(model, images, device, config, augment=tta)
            results += [r for d, t in zip(detections, targets) for r in d.coco_results(t["image_id"])]
        gt = to_coco(dataset)
        if out_dir is not None:
            write_text(Path(out_dir) / "val_annotations.json", json.dumps(gt))
            write_text(Path(out_dir) / "val_detections.json", json.dumps(results))
        return evaluate_coco(gt, results, dataset.classes, **coco_options(config))

    def output_folders(self, save_images: bool) -> list[str]:
        return ["images/"] if save_images else []

    def predict(self, model: nn.Module, images: list[torch.Tensor], names: list[str], job: PredictJob) -> list[dict]:
        """Boxes scoring at least `conf` (with the pipeline's test-time augmentation where enabled); annotated copies
        under images/."""
        entries = []
        found = detect_pipeline(model, images, job.device, job.config, augment=True) if images else []
        for name, image, detections in zip(names, images, found):
            kept = detections.at_least(job.conf)
            if job.save_images:
                job.write(write_annotated, job.out / "images" / name, image, kept, job.classes)
            entry = {"file": name, "width": int(image.shape[2]), "height": int(image.shape[1]),
                     **kept.journal()}
            try:
                geo = read_georeference(job.root / name) if job.root is not None else None
            except DataError as e:  # a broken georeference: this image is reported and skipped, the others go on
                entries.append({"file": name, "skipped": failure_reason(job.root / name, e)})
                continue
            if geo is not None:  # a GeoTIFF: detections.geojson gets its boxes in map coordinates
                entry["georeference"] = geo.as_json()
            entries.append(entry)
        return entries

    def count(self, entries: list[dict]) -> int:
        return sum(len(e["boxes"]) for e in entries if "boxes" in e)

    labels_objects = True

    def prelabel(self, entry: dict, path: Path, file_name: str, image_id: int) -> tuple[Record, np.ndarray]:
        found = Detections.from_journal(entry)
        record = Record(path=path, file_name=file_name, image_id=image_id, width=entry["width"],
                        height=entry["height"], boxes=found.boxes.astype(np.float32), labels=found.labels)
        return record, found.scores

    def write_results(self, out: Path, finished: Iterable[tuple[int, str, dict]], classes: list[str],
                      used: dict) -> list[str]:
        georeferenced = []  # (name, entry) of the GeoTIFFs, for detections.geojson
        with (atomic_open(out / "results.json") as results_file, JsonArray(results_file) as results,
              image_index(out, classes, used) as images, atomic_open(out / "detections.csv") as rows_file):
            rows = csv_writer(rows_file)
            rows.writerow(["file", "class", "score", "x1", "y1", "x2", "y2"])
            for image_id, name, entry in finished:
                images.add(image_record(image_id, name, entry))
                found = Detections.from_journal(entry)
                results.extend(found.coco_results(image_id))
                for (x1, y1, x2, y2), score, label in zip(found.boxes.tolist(), found.scores.tolist(), found.labels):
                    rows.writerow([name, classes[label], score, x1, y1, x2, y2])
                if "georeference" in entry:
                    georeferenced.append((name, entry))
        written = ["results.json (COCO results)", "images.json", "detections.csv"]
        geojson = detections_geojson(georeferenced, classes)
        if geojson is not None:
            write_text(out / "detections.geojson", geojson)
            written.append("detections.geojson (map coordinates)")
        return written

    def frame(self, model: nn.Module, image: np.ndarray, tensor: torch.Tensor, job: FrameJob) -> tuple[np.ndarray, dict]:
        return self.frames(model, [image], [tensor], [job])[0]

    def frames(self, model: nn.Module, images: list[np.ndarray], tensors: list[torch.Tensor], jobs: list[FrameJob]
               ) -> list[tuple[np.ndarray, dict]]:
        """One `detect` call for every stream's frame (a batch for the fixed-size heads), then each stream's own
        tracking, counting and drawing."""
        found = detect(model, tensors, jobs[0].device, amp=jobs[0].config.train.amp)
        return [self.frame_from(det, image, job) for det, image, job in zip(found, images, jobs)]

    def frame_from(self, output: dict, image: np.ndarray, job: FrameJob) -> tuple[np.ndarray, dict]:
        """One frame's (picture, JSON-line fields) from its detector output."""
        return self.shown(Detections.from_output(output), image, job)

    def shown(self, found: Detections, image: np.ndarray, job: FrameJob) -> tuple[np.ndarray, dict]:
        """Tracked (new tracks start at `conf`; a known track may go on with a lower score) or kept at `conf`,
        then recorded, counted and drawn."""
        found = job.tracker.update(found) if job.tracker is not None else found.at_least(job.conf)
        record = found.journal(job.classes)
        if found.masks is not None:
            record["mask_areas"] = [int(m.sum()) for m in found.masks]
        return counted(job, image, found, record, draw_detections(image, found, job.classes))

    def export_graph(self, model: nn.Module) -> nn.Module:
        return OneImageDetections(model).eval()

    def example_input(self, config: PipelineConfig, model: nn.Module) -> torch.Tensor:
        """A batch of one [1, 3, H, W] image: the detector's fixed size, or its eval size."""
        size = model.fixed_size or (config.model.head.min_size,) * 2
        return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))

    def second_input(self, first: torch.Tensor, model: nn.Module) -> torch.Tensor:
        second = super().second_input(first, model)
        return second if model.fixed_size else second[:, :, : first.shape[2] * 3 // 4]

    def export_difference(self, model: nn.Module, runtime, x: torch.Tensor) -> float:
        """Scores and boxes compared when both found the same number of boxes, else infinity."""
        return matched_difference(model([x[0]])[0], runtime([x[0]])[0])[0]

    def run_exported(self, session_run, images) -> list[dict]:
        """The graph's outputs (`export_outputs`) for each image, as the PyTorch model gives them: one image per
        graph call (in-graph NMS leaves each image its own number of detections)."""
        return [{name: torch.from_numpy(value) for name, value in
                 zip(self.export_outputs, session_run(image[None].detach().cpu().float().numpy()))}
                for image in images]


register_task(DetectTask())
