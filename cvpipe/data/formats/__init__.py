"""Dataset formats: one reader per format into `Dataset`, writers for the box formats (coco, voc, yolo)."""

from __future__ import annotations

from pathlib import Path

from cvpipe.data.formats.coco import read_coco, write_coco
from cvpipe.data.formats.folders import read_class_folders, read_images, read_semantic_masks
from cvpipe.data.formats.instance_masks import read_instance_masks
from cvpipe.data.formats.voc import read_voc, write_voc
from cvpipe.data.formats.yolo import read_yolo, write_yolo
from cvpipe.data.records import Dataset
from cvpipe.errors import DataError
from cvpipe.fetch import atomic_copy
from cvpipe.paths import leaves_root

READERS = {"coco": read_coco, "voc": read_voc, "yolo": read_yolo, "folders": read_class_folders,
           "masks": read_semantic_masks, "instance_masks": read_instance_masks, "images": read_images}
WRITERS = {"coco": write_coco, "voc": write_voc, "yolo": write_yolo}


def check_split(split: str) -> str:
    """A split names a folder (or file stem) inside the dataset root: a relative path without `..`, so neither
    reading nor a copy written under another root (`data convert`, `check --fix`) can leave its root."""
    if leaves_root(split):
        raise DataError(f"split {split!r}: leads outside the dataset root; a split is a folder inside it, e.g. "
                        "train or val (no '..', no absolute path)")
    return split


def read_dataset(root: Path, fmt: str, split: str, classes: list[str] | None = None) -> Dataset:
    check_split(split)
    if fmt not in READERS:
        raise DataError(f"unknown dataset format {fmt!r}; expected one of {', '.join(READERS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root does not exist")
    return READERS[fmt](root, split, list(classes or []))


def image_dest(out: Path, fmt: str, split: str, file_name: str) -> Path:
    return Path(out) / ("images" if fmt == "yolo" else "") / split / file_name


def write_dataset(dataset: Dataset, out: Path, fmt: str, split: str, *, copy_images: bool = True) -> None:
    """Write annotations in `fmt` under OUT, copying each image to where that format expects it."""
    check_split(split)
    if fmt not in WRITERS:
        raise DataError(f"cannot write format {fmt!r}; expected one of {', '.join(WRITERS)}")
    if copy_images:
        for r in dataset.records:
            dest = image_dest(out, fmt, split, r.file_name)
            if dest.resolve() != Path(r.path).resolve():
                atomic_copy(Path(r.path), dest)
    WRITERS[fmt](dataset, Path(out), split)


def discover_splits(root: Path, fmt: str) -> list[str]:
    """The standard split names present under ROOT for this format."""
    root = Path(root)
    names = ("train", "val", "test")
    if fmt == "yolo":
        return [s for s in names if (root / "images" / s).is_dir()]
    if fmt == "voc" and (root / "ImageSets" / "Main").is_dir():
        return [s for s in names if (root / "ImageSets" / "Main" / f"{s}.txt").exists()]
    if fmt == "coco":
        return [s for s in names if (root / s / "annotations.json").exists() or (root / f"{s}.json").exists()]
    return [s for s in names if (root / s).is_dir()]


def guess_format(root: Path, split: str) -> str | None:
    """Which box format a split's files look like (for a message when `data.format` says otherwise), or None."""
    root = Path(root)
    split_dir = root / split
    if (split_dir / "annotations.json").is_file() or (root / f"{split}.json").is_file():
        return "coco"
    if (root / "images" / split).is_dir() and (root / "labels" / split).is_dir():
        return "yolo"
    if split_dir.is_dir() and next(split_dir.glob("*.xml"), None) is not None:
        return "voc"
    if (root / "Annotations").is_dir() and (root / "ImageSets" / "Main" / f"{split}.txt").is_file():
        return "voc"
    if (split_dir / "images").is_dir() and (split_dir / "instances").is_dir():
        return "instance_masks"
    if split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir()):
        return "folders"
    return None


def layout_problem(root: Path, fmt: str, split: str, classes: list[str] | None = None) -> str:
    """What stops `data.format` from reading this split (no annotation file where the format expects one, no
    image), naming the format the files look like instead; "" where it reads. Reads the split as training will."""
    try:
        dataset = read_dataset(root, fmt, split, classes)
    except DataError as e:
        problem = str(e)
    else:
        if len(dataset):
            return ""
        problem = f"{Path(root) / split}: no images found as format {fmt}"
    guess = guess_format(root, split)
    return problem + (f"; its files look like format {guess}: set data.format: {guess}" if guess and guess != fmt
                      else "")
