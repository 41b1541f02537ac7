"""`cvpipe label import`: corrected annotations from Label Studio (its JSON export) or CVAT (CVAT for images 1.1
XML) into a new dataset folder in the pipeline's format, checked as `cvpipe data check` checks one. The images
are copied from the folder they were labeled from; nothing there is changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cvpipe.config import PipelineConfig
from cvpipe.data.check import check_dataset
from cvpipe.data.formats import WRITERS, read_dataset, write_dataset
from cvpipe.data.records import Dataset, Problem
from cvpipe.errors import CvpipeError
from cvpipe.io.outputs import new_dataset_dir
from cvpipe.labeling.cvat import read_cvat
from cvpipe.labeling.label_studio import read_label_studio
from cvpipe.labeling.prelabel import require_labels

READERS: dict[str, Callable[..., Dataset]] = {
    ".json": lambda path, images, classes, predictions: read_label_studio(path, images, classes,
                                                                          predictions=predictions),
    ".xml": lambda path, images, classes, predictions: read_cvat(path, images, classes),
}


@dataclass
class ImportReport:
    out: Path
    fmt: str
    split: str
    dataset: Dataset  # as read from the tool's file
    left_out: list[Problem] = field(default_factory=list)  # what the tool's file held that is not in the copy
    check: list[Problem] = field(default_factory=list)  # `data check` of the written copy


def read_labels(path: Path, images: Path, classes: list[str] | None, *, predictions: bool = False) -> Dataset:
    """The tool's file (by its suffix: .json Label Studio, .xml CVAT) → a Dataset; `classes` None: the names the
    file uses."""
    path = Path(path)
    if path.suffix.lower() not in READERS:
        raise CvpipeError(f"{path}: expected Label Studio JSON (.json) or CVAT for images 1.1 XML (.xml)")
    if not path.is_file():
        raise CvpipeError(f"{path}: no such file")
    return READERS[path.suffix.lower()](path, Path(images), classes, predictions)


def import_labels(config: PipelineConfig, path: Path, images: Path, out: Path, *, fmt: str | None = None,
                  split: str = "train", predictions: bool = False) -> ImportReport:
    require_labels(config)
    fmt = fmt or (config.data.format if config.data.format in WRITERS else "coco")
    if fmt not in WRITERS:
        raise CvpipeError(f"--format {fmt}: expected one of {', '.join(WRITERS)}")
    # a pipeline that learns its classes from its data takes the names the file uses
    dataset = read_labels(path, images, list(config.data.classes) or None, predictions=predictions)
    if not dataset.records:
        reasons = sorted({p.kind for p in dataset.problems})
        raise CvpipeError(f"{path}: no labeled image of {images} in it ({', '.join(reasons) or 'the file is empty'});"
                          " is --images the folder the images were labeled from?",
                          [str(p) for p in dataset.problems[:5]])
    with new_dataset_dir(out, images, "--out") as building:
        write_dataset(dataset, building, fmt, split)
    written = read_dataset(out, fmt, split, dataset.classes)
    return ImportReport(out, fmt, split, dataset, [p for p in dataset.problems], check_dataset(written))
