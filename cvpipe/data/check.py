"""`cvpipe data check`: find what would break training, and `--fix`: write a cleaned copy (never in place)."""

from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path

import numpy as np

from cvpipe.data.formats import write_dataset
from cvpipe.data.records import Dataset, Problem
from cvpipe.io.images import PER_FILE_ERRORS, failure_reason, read_image
from cvpipe.io.outputs import refuse_inside_or_over

# Kinds that do not stop training: reported, exit code unaffected.
WARNINGS = {"empty image"}


def box_problems(dataset: Dataset) -> list[Problem]:
    out = []
    reported = any(p.kind == "unknown class" for p in dataset.problems)  # the reader already named them
    for r in dataset.records:
        for k, (box, label) in enumerate(zip(r.boxes, r.labels)):
            where = f"{r.path} box {k}"
            x1, y1, x2, y2 = (float(v) for v in box)
            if not np.all(np.isfinite(box)):
                out.append(Problem("NaN box", where, f"coordinates {box.tolist()}"))
            elif x2 < x1 or y2 < y1:
                out.append(Problem("inverted box", where, f"x1,y1,x2,y2 = {x1:g},{y1:g},{x2:g},{y2:g}"))
            elif x2 == x1 or y2 == y1:
                out.append(Problem("zero-area box", where, f"x1,y1,x2,y2 = {x1:g},{y1:g},{x2:g},{y2:g}"))
            elif r.width and r.height and (x1 < 0 or y1 < 0 or x2 > r.width or y2 > r.height):
                out.append(Problem("out-of-bounds box", where,
                                   f"{x1:g},{y1:g},{x2:g},{y2:g} outside the {r.width}x{r.height} image"))
            if label < 0 and not reported:
                out.append(Problem("unknown class", where, "label has no class name"))
    return out


def check_dataset(dataset: Dataset, *, decode: bool = True) -> list[Problem]:
    """Every problem in the dataset: those found while reading, missing/unreadable images, bad boxes, empties."""
    problems = list(dataset.problems)
    for r in dataset.records:
        if not Path(r.path).exists():
            problems.append(Problem("missing image", str(r.path), "file does not exist"))
            continue
        if decode:
            try:
                image = read_image(r.path)
            except PER_FILE_ERRORS as e:
                problems.append(Problem("unreadable image", str(r.path), failure_reason(r.path, e)))
                continue
            if (r.width, r.height) == (0, 0):
                r.height, r.width = image.shape[:2]
            elif (r.width, r.height) != (image.shape[1], image.shape[0]):
                problems.append(Problem("size mismatch", str(r.path),
                                        f"annotation says {r.width}x{r.height}, image is {image.shape[1]}x{image.shape[0]}"))
        if r.label is None and r.mask_path is None and len(r.boxes) == 0:
            problems.append(Problem("empty image", str(r.path), "no objects", fatal=False))
    problems += box_problems(dataset)
    return problems


def summarize(problems: list[Problem], examples: int = 3) -> list[tuple[str, int, bool, list[str]]]:
    """(kind, count, fatal, first examples) per kind of problem."""
    groups: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        groups[p.kind].append(p)
    return [(kind, len(ps), ps[0].fatal, [str(p) for p in ps[:examples]]) for kind, ps in groups.items()]


def fixed_copy(dataset: Dataset, problems: list[Problem]) -> tuple[Dataset, dict[str, int]]:
    """A cleaned copy: drop unusable images and boxes, clip out-of-bounds boxes. Counts what it did."""
    bad_images = {p.where for p in problems if p.kind in ("missing image", "unreadable image", "size mismatch")}
    fixed = copy.deepcopy(dataset)
    fixed.problems = []
    counts = {"images dropped": 0, "boxes dropped": sum(p.skipped for p in problems), "boxes clipped": 0}
    kept = []
    for r in fixed.records:
        if str(r.path) in bad_images:
            counts["images dropped"] += 1
            continue
        boxes = r.boxes.astype(np.float64)
        clipped = boxes.copy()
        if r.width and r.height:
            clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, r.width)
            clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, r.height)
        finite = np.isfinite(boxes).all(1)
        valid = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]) & (r.labels >= 0)
        valid &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # inverted boxes are dropped, not flipped
        counts["boxes clipped"] += int((valid & finite & np.any(clipped != boxes, axis=1)).sum())
        counts["boxes dropped"] += int((~valid).sum())
        r = r.with_objects(valid)
        r.boxes = clipped[valid].astype(np.float32)
        kept.append(r)
    fixed.records = kept
    return fixed, counts


def write_fixed(dataset: Dataset, problems: list[Problem], out: Path, fmt: str) -> dict[str, int]:
    refuse_inside_or_over(out, dataset.root, "--fix")
    fixed, counts = fixed_copy(dataset, problems)
    write_dataset(fixed, out, fmt, dataset.split)
    return counts
