"""What the labeling tools' files hold, in cvpipe's terms: a `Dataset` whose records are named by their path under
one images folder, with each object's score where the labels are a model's pre-labels; and the geometry every tool
speaks (polygons from masks, images found by the names a tool gives them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cvpipe.data.records import Dataset, Problem, decode_segmentations, inside_root
from cvpipe.errors import DataError
from cvpipe.io.images import list_images


@dataclass
class Labels:
    dataset: Dataset  # records' file_name: the image's path under the images folder, with / separators
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # file_name → each object's score (pre-labels)
    model_version: str = ""  # what made the pre-labels, as the tools show it


def outline(segmentation, height: int, width: int) -> np.ndarray | None:
    """An instance's COCO segmentation (polygons or RLE) as the one polygon a labeling tool draws for it, [N, 2]
    pixel (x, y), N ≥ 3: its largest part (an RLE mask's largest outer contour, traced by OpenCV through the
    boundary pixels' centres); None for an empty mask."""
    import cv2

    if isinstance(segmentation, list):
        parts = [np.asarray(p, np.float64).reshape(-1, 2) for p in segmentation if len(p) >= 6]
    else:
        mask = decode_segmentations([segmentation], height, width)[0]
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        parts = [c.reshape(-1, 2).astype(np.float64) for c in contours if len(c) >= 3]
    return max(parts, key=lambda p: cv2.contourArea(p.astype(np.float32)), default=None)


def polygon_box(points: np.ndarray) -> list[float]:
    """The xyxy box around a polygon's points."""
    return [float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max())]


class ImageFinder:
    """The image files under one folder, found by the name a labeling tool gives each: its path under the folder,
    else its file name where only one image has it. Names that lead outside the folder are refused."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"--images {root}: no such folder; name the folder the images were labeled from")
        self.by_name: dict[str, list[Path]] = {}
        for path in list_images(self.root):
            self.by_name.setdefault(path.name, []).append(path)

    def find(self, name: str, where: str) -> tuple[Path, str] | Problem:
        """(the image, its path under the folder, with / separators) or why it is not there."""
        try:
            exact = inside_root(self.root, Path(name), where=where)
        except DataError as e:
            return Problem("image outside the folder", where, str(e).split(": ", 1)[-1], skipped=True)
        if exact.is_file():
            return self.root / name, Path(name).as_posix()
        same = self.by_name.get(Path(name).name, [])
        if len(same) == 1:
            return same[0], same[0].relative_to(self.root).as_posix()
        detail = (f"{len(same)} images under {self.root} are named {Path(name).name}; keep the folder layout the "
                  "tool saw" if same else f"{name} is not under {self.root}")
        return Problem("missing image", where, detail, fatal=False, skipped=True)
