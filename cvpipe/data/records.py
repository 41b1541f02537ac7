"""The one annotation record every format reads into, and the dataset that loads samples from it.

Boxes are absolute-pixel xyxy float32; labels index `Dataset.classes` (-1 = a class name the
dataset's class list does not know, kept so `cvpipe data check` can report it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cvpipe.errors import DataError
from cvpipe.io.images import read_image


def empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


def empty_labels() -> np.ndarray:
    return np.zeros((0,), np.int64)


@dataclass
class Record:
    path: Path  # absolute image path, inside the dataset root
    file_name: str  # path relative to its split folder, used when writing
    image_id: int
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=empty_boxes)
    labels: np.ndarray = field(default_factory=empty_labels)
    segmentations: list | None = None  # per instance: COCO polygons or RLE
    mask_path: Path | None = None  # semantic mask PNG (class index per pixel)
    label: int | None = None  # image-level class (class folders)

    def with_objects(self, keep: np.ndarray) -> Record:
        """A copy holding only the objects `keep` (a boolean mask) selects: boxes, labels and masks together."""
        segmentations = None if self.segmentations is None else [s for s, k in zip(self.segmentations, keep) if k]
        return replace(self, boxes=self.boxes[keep], labels=self.labels[keep], segmentations=segmentations)


@dataclass
class Problem:
    kind: str  # e.g. "missing image", "out-of-bounds box"
    where: str  # file (and object) it concerns
    detail: str = ""
    fatal: bool = True  # would break training
    # the reader left this object out and read the rest: train and convert go on with a warning
    skipped: bool = False

    def __str__(self) -> str:
        return f"{self.where}: {self.detail}" if self.detail else self.where


MALFORMED = "malformed annotation"  # geometry that is not numbers of the right count; the object is left out


def malformed(where: str, detail: str) -> Problem:
    return Problem(MALFORMED, where, detail, skipped=True)


@dataclass
class Dataset:
    root: Path
    split: str
    classes: list[str]
    records: list[Record]
    problems: list[Problem] = field(default_factory=list)  # found while reading

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, i: int) -> dict:
        """The sample record: RGB image plus its targets (instance masks decoded when present)."""
        r = self.records[i]
        image = read_image(r.path)
        sample = {"image": image, "boxes": r.boxes.copy(), "labels": r.labels.copy(), "image_id": r.image_id,
                  "path": str(r.path)}
        if r.segmentations is not None:
            sample["masks"] = decode_segmentations(r.segmentations, r.height, r.width)
        if r.mask_path is not None:
            import cv2

            sample["mask"] = cv2.imread(str(r.mask_path), cv2.IMREAD_GRAYSCALE)
        if r.label is not None:
            sample["label"] = r.label
        return sample


def decode_segmentations(segmentations: list, height: int, width: int) -> list[np.ndarray]:
    """COCO polygons / RLE (compressed or not) → one HxW uint8 mask per instance, via pycocotools."""
    from pycocotools import mask as mask_utils

    masks = []
    for seg in segmentations:
        if isinstance(seg, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = seg
        masks.append(mask_utils.decode(rle).astype(np.uint8))
    return masks


def boxes_of_masks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tight xyxy boxes (pixel edges) of [K, H, W] masks, and which masks have any pixel."""
    rows, cols = masks.any(2), masks.any(1)
    keep = rows.any(1)
    boxes = np.zeros((len(masks), 4), np.float32)
    for k in np.flatnonzero(keep):
        ys, xs = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
        boxes[k] = xs[0], ys[0], xs[-1] + 1, ys[-1] + 1
    return boxes, keep


def encode_masks(masks: np.ndarray) -> list[dict]:
    """uint8 [K, H, W] masks → COCO compressed RLE, counts as text (as JSON holds it), via pycocotools."""
    from pycocotools import mask as mask_utils

    if not len(masks):
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def union_area(rles: list[dict]) -> int:
    """Pixels in the union of COCO compressed RLE masks (counts as text), without decoding them (pycocotools)."""
    from pycocotools import mask as mask_utils

    if not rles:
        return 0
    return int(mask_utils.area(mask_utils.merge([{**rle, "counts": rle["counts"].encode("ascii")} for rle in rles])))


@dataclass(frozen=True)
class PlacedMask:
    """A binary mask as its tight crop at (x, y) of its image: an instance found in a slice of a 10,000² image
    costs its own size, not the image's 100 MB."""

    x: int
    y: int
    crop: np.ndarray  # uint8 [h, w]

    @classmethod
    def of(cls, mask: np.ndarray, x: int = 0, y: int = 0) -> PlacedMask:
        """The tight crop of a mask whose top-left corner is at (x, y) of the image."""
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if not len(rows):
            return cls(x, y, np.zeros((0, 0), np.uint8))
        crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        return cls(x + int(cols[0]), y + int(rows[0]), np.ascontiguousarray(crop != 0, dtype=np.uint8))

    @property
    def area(self) -> int:
        return int(self.crop.sum())

    @staticmethod
    def union(masks: list[PlacedMask]) -> PlacedMask:
        x0, y0 = min(m.x for m in masks), min(m.y for m in masks)
        x1, y1 = max(m.x + m.crop.shape[1] for m in masks), max(m.y + m.crop.shape[0] for m in masks)
        crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for m in masks:
            crop[m.y - y0:m.y - y0 + m.crop.shape[0], m.x - x0:m.x - x0 + m.crop.shape[1]] |= m.crop
        return PlacedMask(x0, y0, crop)

    def scaled(self, scale: float) -> PlacedMask:
        """The mask in an image resized by `scale` (nearest neighbour)."""
        import cv2

        if not self.crop.size:
            return self
        h, w = (max(1, round(v * scale)) for v in self.crop.shape)
        return PlacedMask(round(self.x * scale), round(self.y * scale),
                          cv2.resize(self.crop, (w, h), interpolation=cv2.INTER_NEAREST))

    def rle(self, height: int, width: int) -> dict:
        """COCO compressed RLE over the height × width image, without the image-sized mask. The run lengths are
        counted here, in COCO's column-major order over the columns the crop spans (pycocotools encodes whole
        masks only); pycocotools compresses them."""
        from pycocotools import mask as mask_utils

        h, w = self.crop.shape
        strip = np.zeros((height, w), np.uint8)  # the crop's columns, full height
        strip[self.y:self.y + h] = self.crop
        flat = strip.ravel(order="F")
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        counts = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist() if flat.size else []
        if flat.size and flat[0]:
            counts.insert(0, 0)  # runs alternate from a run of zeros
        counts = counts or [0]
        counts[0] += self.x * height  # the columns left of the crop
        tail = (width - self.x - w) * height  # and right of it
        if len(counts) % 2:
            counts[-1] += tail
        elif tail:
            counts.append(tail)
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def inside_root(root: Path, candidate: Path, *, where: str) -> Path:
    """Resolve a path named by a dataset and refuse one that escapes the dataset root."""
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DataError(f"{where}: path {str(candidate)!r} points outside the dataset root {root}; refusing to read it")
    return resolved
