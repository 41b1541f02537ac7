"""Read-only layouts for classification and semantic segmentation.

- class folders: ROOT/SPLIT/CLASS/*.jpg (torchvision ImageFolder);
- semantic masks: ROOT/SPLIT/images/NAME.* with ROOT/SPLIT/masks/NAME.png holding a class index per pixel;
- plain images: ROOT/SPLIT/**/*.jpg, no labels (content images for style transfer).
"""

from __future__ import annotations

from pathlib import Path

from cvpipe.data.records import Dataset, Problem, Record, inside_root
from cvpipe.errors import DataError
from cvpipe.io.images import image_size, list_images


def _size(path: Path, problems: list[Problem]) -> tuple[int, int]:
    try:
        return image_size(path)
    except DataError as e:
        problems.append(Problem("unreadable image", str(path), str(e)))
        return 0, 0


def read_class_folders(root: Path, split: str, classes: list[str]) -> Dataset:
    split_dir = inside_root(Path(root), Path(split), where=f"split {split!r}")
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: no such split folder; expected ROOT/{split}/CLASS/*.jpg")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    classes = list(classes) or found
    records, problems = [], []
    for name in found:
        if name not in classes:
            problems.append(Problem("unknown class", str(split_dir / name), f"folder {name!r} is not in {classes}"))
            continue
        for path in list_images(split_dir / name):
            w, h = _size(path, problems)
            records.append(Record(path=path, file_name=path.relative_to(split_dir).as_posix(), image_id=len(records),
                                  width=w, height=h, label=classes.index(name)))
    return Dataset(Path(root), split, classes, records, problems)


def read_semantic_masks(root: Path, split: str, classes: list[str]) -> Dataset:
    split_dir = inside_root(Path(root), Path(split), where=f"split {split!r}")
    image_dir, mask_dir = split_dir / "images", split_dir / "masks"
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: no such folder; expected ROOT/{split}/images and ROOT/{split}/masks")
    records, problems = [], []
    for path in list_images(image_dir):
        mask = mask_dir / path.relative_to(image_dir).with_suffix(".png")
        if not mask.exists():
            problems.append(Problem("missing mask", str(path), f"expected {mask}"))
            continue
        w, h = _size(path, problems)
        records.append(Record(path=path, file_name=path.relative_to(image_dir).as_posix(), image_id=len(records),
                              width=w, height=h, mask_path=mask))
    return Dataset(Path(root), split, list(classes), records, problems)


def read_images(root: Path, split: str, classes: list[str]) -> Dataset:
    split_dir = inside_root(Path(root), Path(split), where=f"split {split!r}")
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: no such split folder; expected ROOT/{split}/*.jpg")
    records, problems = [], []
    for path in list_images(split_dir):
        w, h = _size(path, problems)
        records.append(Record(path=path, file_name=path.relative_to(split_dir).as_posix(), image_id=len(records),
                              width=w, height=h))
    return Dataset(Path(root), split, list(classes), records, problems)
