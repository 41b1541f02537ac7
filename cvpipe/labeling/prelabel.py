"""`cvpipe label export`: a trained pipeline's predictions for a folder of unlabeled images, as pre-labels a
person corrects in a labeling tool.

The images go through `cvpipe predict` (the same slicing, test-time views and carried threshold; its files stay in
OUT/predictions/, `--resume` goes on from them), and its journal becomes each requested format:
OUT/labelstudio/ (tasks.json, label_config.xml), OUT/cvat/annotations.xml, and OUT/coco|yolo|voc/ (a dataset
folder of the images and their pre-labels, split `train`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from cvpipe.config import PipelineConfig
from cvpipe.data.formats import WRITERS, write_dataset
from cvpipe.data.records import Dataset
from cvpipe.engine.journal import Finished, JournalIndex, journal_paths
from cvpipe.engine.predict import predict
from cvpipe.errors import CvpipeError
from cvpipe.io.images import discover, image_name
from cvpipe.io.outputs import new_dataset_dir, refuse_inside_or_over
from cvpipe.labeling.cvat import write_cvat
from cvpipe.labeling.label_studio import LOCAL_FILES, write_label_studio
from cvpipe.labeling.regions import Labels
from cvpipe.tasks import get_task

TOOLS = ("labelstudio", "cvat")
FORMATS = (*TOOLS, *WRITERS)


@dataclass
class PrelabelReport:
    out: Path
    images: int
    objects: int
    written: dict[str, list[str]] = field(default_factory=dict)  # format → files under OUT/format
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why), from predict


def require_labels(config: PipelineConfig) -> None:
    if not get_task(config.task).labels_objects:
        raise CvpipeError(f"cvpipe label: {config.name} is a {config.task} pipeline; labels are read and written for "
                          "detection, instance segmentation and classification pipelines")


def model_version(config: PipelineConfig, weights: Path | None) -> str:
    """What made the pre-labels, as the labeling tools show it: the pipeline and its checkpoint (and the
    checkpoint's date), or its ready weights."""
    if weights is None:
        return f"{config.name} ({config.model.weights or config.model.backbone.weights or 'untrained'})"
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(Path(weights).stat().st_mtime))
    return f"{config.name} {Path(weights).name} {stamp}"


def prelabels(config: PipelineConfig, source: str | Path, predictions: Path, classes: list[str],
              weights: Path | None) -> Labels:
    """A finished predict run's journal (in `predictions`) as labels with scores, in discovery order."""
    task = get_task(config.task)
    files, root = discover(source, exclude=predictions.parent)
    names = [image_name(f, root) for f in files]
    records, scores = [], {}
    for image_id, name, entry in Finished(JournalIndex(journal_paths(predictions, 1)), names):
        record, score = task.prelabel(entry, root / name, Path(name).as_posix(), image_id)
        records.append(record)
        scores[record.file_name] = score
    return Labels(Dataset(root, ".", classes, records), scores, model_version(config, weights))


def write_format(labels: Labels, fmt: str, out: Path, *, image_url: str, task_name: str) -> list[str]:
    """Labels in one format under `out` (created whole: a folder that exists is refused)."""
    writers: dict[str, Callable[[Path], list[str]]] = {
        "labelstudio": lambda into: write_label_studio(labels, into, image_url),
        "cvat": lambda into: write_cvat(labels, into, task_name),
    }
    with new_dataset_dir(out, labels.dataset.root, f"--out {out.parent}:") as building:
        if fmt in writers:
            return writers[fmt](building)
        write_dataset(labels.dataset, building, fmt, "train")
        return ["train/"] if fmt != "yolo" else ["images/train/", "labels/train/", "data.yaml"]


def export_prelabels(config: PipelineConfig, source: str | Path, out: Path, weights: Path | None, *,
                     formats: tuple[str, ...] = TOOLS, conf: float | str | None = None, resume: bool = False,
                     image_url: str = LOCAL_FILES, console: Console) -> PrelabelReport:
    require_labels(config)
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown:
        raise CvpipeError(f"--format {unknown[0]}: expected one of {', '.join(FORMATS)}")
    _, root = discover(source, exclude=out)
    refuse_inside_or_over(out, root, "--out")  # the copies would be read as images to label next time
    taken = [out / fmt for fmt in formats if (out / fmt).exists() and any((out / fmt).iterdir())]
    if taken:  # before the model runs: the run would end refusing to write over them
        raise CvpipeError(f"--out {out}: {taken[0]} exists; choose a new --out, or remove it (the predictions "
                          "in OUT/predictions/ are kept: --resume goes on from them)")
    run = predict(config, source, out / "predictions", weights, conf=conf, resume=resume, save_images=False,
                  console=console)
    labels = prelabels(config, source, out / "predictions", run.classes, weights)
    report = PrelabelReport(out, len(labels.dataset), sum(len(r.boxes) or (r.label is not None)
                                                          for r in labels.dataset.records), skipped=run.skipped)
    for fmt in formats:
        report.written[fmt] = write_format(labels, fmt, out / fmt, image_url=image_url, task_name=config.name)
    return report

