"""Out-of-fold predictions for `cvpipe label audit --folds K`: K models, each trained without the labels it
audits, so that an error the training model would have learned (a box moved, a crown left out) stands out.

The split is cut into units: an image, or, for an image the pipeline slices (`tiling:`), each slice-sized cell of
a grid over it, so that a few large images still make K folds. The units are dealt into K folds at random
(`train.seed`). Fold k's model trains on the split without fold k: its whole images left out, its cells of the
other images painted over with that image's mean colour and the labels centred in them dropped; the pipeline's
val split still chooses its best.pt and threshold. Its predictions count where their centre lies in a unit of
fold k, so every image is predicted by models that never saw its labels there. Everything stays in OUT/folds/
(the training copies, the K runs) and OUT/predictions/fold-K/; `--resume` goes on from them.
"""

from __future__ import annotations

import random
import shutil
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console

from cvpipe.config import PipelineConfig
from cvpipe.data.formats import read_dataset, write_dataset
from cvpipe.data.records import Dataset, Record
from cvpipe.errors import CvpipeError
from cvpipe.fetch import atomic_copy
from cvpipe.io.images import read_image, write_image
from cvpipe.ops.slicing import slices_needed

Cell = tuple[int, int]  # (grid column, grid row); an image that is one unit is its cell (0, 0)


@dataclass(frozen=True)
class Folds:
    """Which fold each unit of a split is in."""

    count: int
    grid: dict[str, tuple[int | None, int, int]]  # file name → (cell side in pixels or None, columns, rows)
    fold: dict[str, dict[Cell, int]]  # file name → each of its cells' fold

    @property
    def units(self) -> int:
        return sum(len(cells) for cells in self.fold.values())

    def folds_of(self, file: str) -> set[int]:
        return set(self.fold[file].values())

    def cell_at(self, file: str, x: float, y: float) -> Cell:
        side, columns, rows = self.grid[file]
        if side is None:
            return 0, 0
        return min(max(int(x) // side, 0), columns - 1), min(max(int(y) // side, 0), rows - 1)

    def folds_at(self, file: str, boxes: np.ndarray) -> np.ndarray:
        """The fold of each box's centre."""
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2 if len(boxes) else np.zeros((0, 2))
        return np.array([self.fold[file][self.cell_at(file, x, y)] for x, y in centres], int)


def deal(config: PipelineConfig, dataset: Dataset, count: int) -> Folds:
    """The split's units (images, or slice-sized cells of the images the pipeline slices) dealt into `count`
    folds at random, seeded by train.seed."""
    grid: dict[str, tuple[int | None, int, int]] = {}
    units: list[tuple[str, Cell]] = []
    for record in dataset.records:
        side = slices_needed(config, record.height, record.width)
        columns, rows = (1, 1) if side is None else (-(-record.width // side), -(-record.height // side))
        grid[record.file_name] = (side, columns, rows)
        units += [(record.file_name, (c, r)) for r in range(rows) for c in range(columns)]
    if len(units) < count:
        raise CvpipeError(f"--folds {count}: the {dataset.split} split has {len(units)} unit(s) to hold out (images, "
                          "or slice-sized cells of the images the pipeline slices); choose --folds "
                          f"{max(len(units), 2)} or fewer" if len(units) >= 2 else
                          f"--folds: the {dataset.split} split is one image the pipeline does not slice; "
                          "there is nothing to hold out: audit it without --folds")
    random.Random(dataset.split + str(config.train.seed)).shuffle(units)
    fold: dict[str, dict[Cell, int]] = {name: {} for name in grid}
    for n, (name, cell) in enumerate(units):
        fold[name][cell] = n % count
    return Folds(count, grid, fold)


def training_split(dataset: Dataset, folds: Folds, fold: int, into: Path) -> Dataset:
    """The split without fold `fold`, its images under `into` (a split folder): images wholly in the fold left
    out; the fold's cells of the others painted with the image's mean colour and the labels centred there
    dropped; the rest copied as they are."""
    records = []
    for record in dataset.records:
        name = record.file_name
        held = [cell for cell, f in folds.fold[name].items() if f == fold]
        if not held:
            records.append(record)
            continue
        if folds.folds_of(name) == {fold}:
            continue  # the whole image is held out
        side = folds.grid[name][0]
        pixels = read_image(record.path)
        mean = pixels.reshape(-1, pixels.shape[-1]).mean(0).round().astype(pixels.dtype)
        for c, r in held:
            pixels[r * side:(r + 1) * side, c * side:(c + 1) * side] = mean
        dest = into / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_image(dest, pixels)
        records.append(replace(record.with_objects(folds.folds_at(name, record.boxes) != fold), path=dest))
    return Dataset(dataset.root, dataset.split, dataset.classes, records)


def _write_split(dataset: Dataset, root: Path, split: str, fmt: str) -> None:
    """A split as cvpipe reads it back: COCO for boxes and masks, class folders (images copied as CLASS/NAME, as
    they were read) for image classes."""
    if fmt == "folders":
        for record in dataset.records:
            dest = root / split / record.file_name
            if dest.resolve() != Path(record.path).resolve():
                atomic_copy(Path(record.path), dest)
    else:
        write_dataset(dataset, root, "coco", split)


def fold_config(config: PipelineConfig, root: Path, fold: int, fmt: str, out: Path) -> PipelineConfig:
    """The pipeline training fold `fold`'s model: the training copy at root/fold-K, the val split at root/val,
    its runs under out/fold-K."""
    data = config.data.model_copy(update={"format": fmt, "root": root, "train": f"fold-{fold}",
                                          "val": "val" if config.data.val is not None else None})
    output = config.output.model_copy(update={"dir": out / f"fold-{fold}"})
    return config.model_copy(update={"data": data, "output": output})


def train_folds(config: PipelineConfig, dataset: Dataset, folds: Folds, out: Path, *, resume: bool,
                console: Console) -> list[Path]:
    """Each fold's model trained (or, with `resume`, taken from an earlier run: finished, or continued from its
    last.pt); their checkpoints, OUT/fold-K.pt."""
    from cvpipe.engine.data import load_split
    from cvpipe.engine.fit import fit
    from cvpipe.engine.runs import latest_run_dir

    fmt = "folders" if any(r.label is not None for r in dataset.records) else "coco"
    root = out / "data"
    if config.data.val is not None and not (root / "val").exists():
        _write_split(load_split(config, "val")[0], root, "val", fmt)
    checkpoints = []
    for fold in range(folds.count):
        done = out / f"fold-{fold}.pt"
        checkpoints.append(done)
        if done.exists() and resume:
            console.print(f"fold {fold + 1}/{folds.count}: trained earlier ({done})", markup=False)
            continue
        split = root / f"fold-{fold}"
        if not (split.exists() and resume):
            shutil.rmtree(split, ignore_errors=True)
            training = training_split(dataset, folds, fold, split)
            _write_split(training, root, f"fold-{fold}", fmt)
        training = read_dataset(root, fmt, f"fold-{fold}", dataset.classes)
        held = sum(f == fold for cells in folds.fold.values() for f in cells.values())
        console.print(f"fold {fold + 1}/{folds.count}: training without {held} of {folds.units} units "
                      f"({len(training)} images, {sum(len(r.boxes) or r.label is not None for r in training.records)}"
                      " labels)", markup=False)
        config_k = fold_config(config, root, fold, fmt, out)
        last = (latest_run_dir(config_k) or out / "none") / "last.pt"
        result = fit(config_k, resume=resume and last.exists(), console=console, tensorboard=False)
        atomic_copy(result.best if result.best.exists() else result.last, done)
    return checkpoints


@dataclass
class Predictions:
    """A split's images as the audit's model (or, out of fold, models) predicted them."""

    predicted: dict[Path, tuple[Record, np.ndarray]]  # image path (resolved) → its predictions and their scores
    confident: float
    source: str  # where `confident` came from, in words
    skipped: list[tuple[str, str]]  # images the models could not read


def out_of_fold(config: PipelineConfig, dataset: Dataset, count: int, out: Path, *, conf: float | str | None,
                resume: bool, console: Console) -> Predictions:
    """The split's images predicted by K models that never saw the labels they are compared with."""
    from cvpipe.engine.predict import predict
    from cvpipe.labeling.prelabel import prelabels
    from cvpipe.ops.threshold import resolve_conf

    folds = deal(config, dataset, count)
    if (out / "folds").exists() and not resume:  # hours of training: never redone or mixed by accident
        raise CvpipeError(f"--out {out}: it holds an earlier audit's trainings ({out / 'folds'}); add --resume to go "
                          "on from them, or choose a new --out")
    budget = (f" (about {count * config.train.time_limit:g} minutes: {count} × train.time_limit)"
              if config.train.time_limit else f" ({count} × train.epochs)")
    console.print(f"--folds {count}: training {count} models{budget}, each without the labels it audits",
                  markup=False)
    checkpoints = train_folds(config, dataset, folds, out / "folds", resume=resume, console=console)
    thresholds = [resolve_conf(conf, weights, views=config.tta.enabled) for weights in checkpoints]
    confident = statistics.median(value for value, _ in thresholds)
    source = thresholds[0][1] if conf not in (None, "auto") else \
        f"the median of the {count} fold models' best-F1 thresholds on val"
    parts: dict[Path, list[tuple[Record, np.ndarray]]] = {}  # image → each fold's predictions kept there
    skipped: list[tuple[str, str]] = []
    for fold, weights in enumerate(checkpoints):
        records = [r for r in dataset.records if fold in folds.folds_of(r.file_name)]
        files = [Path(r.path) for r in records]
        run = predict(config, files, out / "predictions" / f"fold-{fold}", weights, conf=min(0.05, confident),
                      resume=resume, save_images=False, console=console)
        skipped += run.skipped
        found = prelabels(config, files, out / "predictions" / f"fold-{fold}", run.classes, weights)
        theirs = {Path(r.path).resolve(): r for r in found.dataset.records}
        for original in records:
            key = Path(original.path).resolve()
            if key not in theirs:  # unreadable: predict reported it
                continue
            record, scores = theirs[key], np.asarray(found.scores[theirs[key].file_name])
            if record.label is None:  # boxes: those centred in this fold's units
                keep = folds.folds_at(original.file_name, record.boxes.reshape(-1, 4)) == fold
                record, scores = record.with_objects(keep), scores[keep]
            parts.setdefault(key, []).append((record, scores))
    predicted = {key: _joined(found) for key, found in parts.items()}
    return Predictions(predicted, confident, source, skipped)


def _joined(parts: list[tuple[Record, np.ndarray]]) -> tuple[Record, np.ndarray]:
    """One image's predictions from the folds that predicted a part of it."""
    first, scores = parts[0]
    if len(parts) == 1:
        return first, scores
    return (replace(first, boxes=np.concatenate([r.boxes.reshape(-1, 4) for r, _ in parts]),
                    labels=np.concatenate([r.labels for r, _ in parts]), segmentations=None),
            np.concatenate([s for _, s in parts]))
