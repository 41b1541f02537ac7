"""`cvpipe label select`: which images (or windows of large images) of an unlabeled pool to label next.

Each candidate is an image, or for an image the pipeline slices, each slice-sized window of it (no overlap). For
each the model's detections (plain, and with the pipeline's test-time views where it has them) give:
- uncertainty: Σ min(s, 1 − s) over its detections (score s ≥ 0.05): the number of wrong calls to expect from
  the model there, were its scores probabilities, at a threshold of 0.5;
- disagreement: the share of the confident objects (plain or with views) the other way does not find (same
  class, IoU ≥ 0.5);
- diversity: the model's own backbone features, average-pooled, compared by cosine distance.
The 3 × budget most uncertain candidates (uncertainty + disagreement) are narrowed to the budget by k-center
greedy (Sener & Savarese 2018) on their features, the most uncertain first: near-duplicates are not all picked.

Written: selection.csv (rank, image, window, scores and the reasons in words), images/ (the picked images,
windows cut out as PNGs) and, for those alone, Label Studio tasks and CVAT XML with the model's pre-labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.console import counted
from cvpipe.data.records import Dataset, Record
from cvpipe.data.samples import image_tensor
from cvpipe.errors import CvpipeError
from cvpipe.io.images import PER_FILE_ERRORS, discover, failure_reason, image_name, read_image, write_image
from cvpipe.labeling.audit import MATCH_IOU, iou
from cvpipe.labeling.label_studio import LOCAL_FILES
from cvpipe.ops.detections import Detections
from cvpipe.ops.slicing import slice_origins, slices_needed

LOW_SCORE = 0.05  # detections kept for the uncertainty; below, the model has decided "nothing"
SHORTLIST = 3  # × budget: the most uncertain candidates that diversity then narrows down
FEATURE_SIDE = 224  # candidates are resized to this for their features


@dataclass
class Candidate:
    file: str  # the image's name under the pool folder
    path: Path
    window: tuple[int, int, int, int]  # x, y, width, height in the image (the whole image where it is not sliced)
    detections: Detections  # in the window's pixels, plain
    uncertainty: float = 0.0
    disagreement: float = 0.0
    feature: np.ndarray | None = None
    distance: float = float("nan")  # to the nearest candidate picked before it (cosine)
    sliced: bool = False  # a window of an image the pipeline slices

    @property
    def name(self) -> str:
        """The file a picked candidate is written as: the image's name, a window's with its position."""
        if not self.sliced:
            return self.file
        stem = Path(self.file).with_suffix("").as_posix()
        return f"{stem}_x{self.window[0]}_y{self.window[1]}.png"

    @property
    def priority(self) -> float:
        return self.uncertainty + self.disagreement


def uncertainty(scores: np.ndarray) -> float:
    """Σ min(s, 1 − s) over the detections' scores; 0 for none."""
    scores = np.asarray(scores, np.float64)
    return float(np.minimum(scores, 1 - scores).sum())


def disagreement(plain: Detections, views: Detections, conf: float) -> float:
    """The share of confident objects found one way (plain or with the views) and not the other: 1 − matched /
    union, objects matched greedily by class and IoU ≥ 0.5."""
    a, b = plain.at_least(conf), views.at_least(conf)
    if not len(a) and not len(b):
        return 0.0
    overlap = iou(a.boxes, b.boxes) * (a.labels[:, None] == b.labels[None])
    matched = 0
    while overlap.size and overlap.max() >= MATCH_IOU:
        i, j = np.unravel_index(np.argmax(overlap), overlap.shape)
        overlap[i, :], overlap[:, j] = 0, 0
        matched += 1
    return 1 - matched / (len(a) + len(b) - matched)


def k_center(features: np.ndarray, order: list[int], n: int) -> tuple[list[int], list[float]]:
    """k-center greedy: the first of `order`, then each time the candidate farthest (cosine distance) from all
    picked so far. Returns (the picked indices, each one's distance when picked)."""
    if not order or n <= 0:
        return [], []
    picked, distances = [order[0]], [float("nan")]
    nearest = 1 - features[order] @ features[order[0]]
    while len(picked) < min(n, len(order)):
        k = int(np.argmax(nearest))
        picked.append(order[k])
        distances.append(float(nearest[k]))
        nearest = np.minimum(nearest, 1 - features[order] @ features[order[k]])
    return picked, distances


def backbone_of(model: nn.Module) -> nn.Module:
    from cvpipe.models.backbones import Backbone

    found = next((m for m in model.modules() if isinstance(m, Backbone)), None)
    if found is None:
        raise CvpipeError("cvpipe label select: this pipeline's model has no timm backbone to compare images by")
    return found


@torch.inference_mode()
def features(backbone: nn.Module, crops: list[np.ndarray]) -> np.ndarray:
    """Each crop's last feature map, average-pooled and L2-normalised ([N, C])."""
    import cv2

    mean = torch.tensor(backbone.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.preprocess.std).view(1, 3, 1, 1)
    device = next(backbone.parameters()).device
    batch = torch.stack([image_tensor(cv2.resize(c, (FEATURE_SIDE, FEATURE_SIDE), interpolation=cv2.INTER_AREA))
                         for c in crops]).float().div(255)
    pooled = backbone(((batch - mean) / std).to(device))[-1].mean((2, 3))
    return torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()


def candidates_of(config: PipelineConfig, model, backbone: nn.Module, path: Path, file: str, device, conf: float
                  ) -> list[Candidate]:
    """An image's candidates (itself, or its windows) with their detections, scores and features."""
    from cvpipe.ops.tta import detect_pipeline

    image = read_image(path)
    height, width = image.shape[:2]
    size = slices_needed(config, height, width)
    windows = [(0, 0, width, height)] if size is None else [
        (x, y, min(size, width - x), min(size, height - y)) for x, y in slice_origins(height, width, size, 0.0)]
    crops = [np.ascontiguousarray(image[y:y + h, x:x + w]) for x, y, w, h in windows]
    tensors = [image_tensor(c) for c in crops]
    plain = detect_pipeline(model, tensors, device, config.plain(), augment=False)
    views = detect_pipeline(model, tensors, device, config, augment=True) if config.tta.enabled else plain
    found = []
    for window, crop_plain, crop_views, feature in zip(windows, plain, views, features(backbone, crops)):
        kept = crop_plain[crop_plain.scores >= LOW_SCORE]
        found.append(Candidate(file, path, window, kept, uncertainty(kept.scores),
                               disagreement(crop_plain, crop_views, conf), feature, sliced=size is not None))
    return found


def pick(candidates: list[Candidate], budget: int) -> list[Candidate]:
    """The budget's candidates: the SHORTLIST × budget most uncertain, narrowed by k-center greedy."""
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].priority)[:SHORTLIST * budget]
    chosen, distances = k_center(np.stack([c.feature for c in candidates]), order, budget)
    for i, distance in zip(chosen, distances):
        candidates[i].distance = distance
    return [candidates[i] for i in chosen]


def reasons(candidate: Candidate, conf: float) -> str:
    scores = candidate.detections.scores
    doubtful = int(((scores >= 0.3) & (scores < 0.7)).sum())
    said = [f"{counted(int((scores >= conf).sum()), 'confident box', 'confident boxes')}, {doubtful} between 0.3 "
            f"and 0.7", f"{candidate.uncertainty:.2f} wrong calls to expect"]
    if candidate.disagreement:
        said.append(f"the test-time views disagree on {candidate.disagreement:.0%} of the objects")
    if np.isfinite(candidate.distance):
        said.append(f"cosine distance {candidate.distance:.2f} from the nearest picked before it")
    return "; ".join(said)


@dataclass
class SelectReport:
    out: Path
    candidates: int
    picked: list[Candidate]
    skipped: list[tuple[str, str]]
    written: dict[str, list[str]]


def select(config: PipelineConfig, source: str | Path, out: Path, weights: Path | None, *, budget: int,
           conf: float | str | None = None, console: Console) -> SelectReport:
    from cvpipe.engine.progress import LoggedProgress
    from cvpipe.engine.runtime import inference_model
    from cvpipe.io.outputs import prepare_dir, refuse_inside_or_over
    from cvpipe.labeling.prelabel import TOOLS, model_version, require_labels, write_format
    from cvpipe.labeling.regions import Labels
    from cvpipe.ops.device import resolve_device
    from cvpipe.ops.threshold import resolve_conf
    from cvpipe.tasks import get_task

    require_labels(config)
    if not get_task(config.task).tiles:
        raise CvpipeError(f"cvpipe label select: {config.name} is a {config.task} pipeline; it ranks images for "
                          "detection and instance segmentation pipelines")
    files, root = discover(source, exclude=out)
    refuse_inside_or_over(out, root, "--out")
    if Path(out).is_dir() and any(Path(out).iterdir()):
        raise CvpipeError(f"--out {out}: the folder exists and is not empty; choose a new folder for this round")
    prepare_dir(out, "--out")
    device = resolve_device(config.train.device)
    model, classes, _, _ = inference_model(config, weights, device, "pytorch")
    confident, _ = resolve_conf(conf, weights, views=config.tta.enabled)
    backbone = backbone_of(model)
    candidates, skipped = [], []
    with LoggedProgress(console) as progress:
        bar = progress.add_task("select", total=len(files), info="")
        for path in files:
            name = image_name(path, root)
            try:
                candidates += candidates_of(config, model, backbone, path, name, device, confident)
            except PER_FILE_ERRORS as e:
                skipped.append((name, failure_reason(path, e)))
            progress.advance(bar)
    if not candidates:
        raise CvpipeError(f"--source {source}: no readable image to choose from", [f"{n}: {r}" for n, r in skipped[:5]])
    picked = pick(candidates, budget)
    records, scores = [], {}
    for rank, candidate in enumerate(picked, start=1):
        x, y, w, h = candidate.window
        write_image(out / "images" / candidate.name, read_image(candidate.path)[y:y + h, x:x + w])
        found = candidate.detections.at_least(confident)
        records.append(Record(out / "images" / candidate.name, candidate.name, rank, w, h,
                              found.boxes.astype(np.float32), found.labels))
        scores[candidate.name] = found.scores
    write_selection(picked, out / "selection.csv", confident)
    labels = Labels(Dataset(out / "images", ".", classes, records), scores, model_version(config, weights))
    written = {fmt: write_format(labels, fmt, out / fmt, image_url=LOCAL_FILES, task_name=config.name)
               for fmt in TOOLS}
    return SelectReport(out, len(candidates), picked, skipped, written)


def write_selection(picked: list[Candidate], path: Path, conf: float) -> None:
    from cvpipe.io.images import atomic_open
    from cvpipe.io.tables import csv_writer

    with atomic_open(path) as f:
        writer = csv_writer(f)
        writer.writerow(["rank", "file", "written_as", "x", "y", "width", "height", "uncertainty", "disagreement",
                         "distance", "boxes", "why"])
        for rank, c in enumerate(picked, start=1):
            writer.writerow([rank, c.file, f"images/{c.name}", *c.window, round(c.uncertainty, 4),
                             round(c.disagreement, 4), round(c.distance, 4) if np.isfinite(c.distance) else "",
                             int((c.detections.scores >= conf).sum()), reasons(c, conf)])
