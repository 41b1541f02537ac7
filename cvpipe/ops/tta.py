"""Test-time augmentation for detectors (`tta:` in a pipeline): every image is also seen mirrored, turned by
quarter turns and at other input scales, each view's boxes are mapped back to the image, and the views are
fused by weighted boxes fusion (ensemble-boxes, Solovyev et al. 2021) or by NMS.

WBF averages the coordinates of the boxes the views agree on and scales a fused box's score by the share of
views that found it, so a box seen once ranks below one seen everywhere. On the tree-crown val split six views
lift AP50 from 0.26 to 0.45 (docs/performance.md, "Faster R-CNN on tree crowns"): most errors there are boxes off by a few pixels,
which averaging corrects, and one-view false positives, which the score scaling sinks.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.ops import batched_nms
from torchvision.transforms.v2 import functional as F

from cvpipe.config import PipelineConfig, TTAConfig
from cvpipe.errors import ConfigError
from cvpipe.ops.detections import Detections
from cvpipe.ops.fusion import weighted_boxes
from cvpipe.ops.inference import detect
from cvpipe.ops.slicing import detect_sliced, whole_or_sliced

# (mirror left-right first, then this many counter-clockwise quarter turns)
VIEWS = {
    "none": [(False, 0)],
    "hflip": [(False, 0), (True, 0)],
    "dihedral": [(mirror, turns) for mirror in (False, True) for turns in range(4)],  # all 8 symmetries of a square
}


def view(image: torch.Tensor, mirror: bool, turns: int) -> torch.Tensor:
    """A CHW image mirrored left-right, then turned counter-clockwise `turns` quarter turns."""
    if mirror:
        image = image.flip(-1)
    return torch.rot90(image, turns, dims=(-2, -1)) if turns else image


def boxes_to_image(boxes: torch.Tensor, mirror: bool, turns: int, width: int, height: int) -> torch.Tensor:
    """xyxy boxes found in `view(image, mirror, turns)` → the same boxes in the (`width`×`height`) image: the view's
    turns undone, then its mirror (torchvision's box transforms)."""
    size = (width, height) if turns % 2 else (height, width)  # the view's (h, w)
    found = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size)
    if turns:
        found = F.rotate(found, -90 * turns, expand=True)
    if mirror:
        found = F.horizontal_flip(found)
    return found.as_subclass(torch.Tensor)


@contextlib.contextmanager
def input_scale(model: nn.Module, scale: float):
    """Run the detector at `scale` × its evaluation size (min_size and max_size)."""
    if scale == 1.0:
        yield
        return
    transform = model.input_resizer  # declared by the head (models/heads/base.py)
    if transform is None:
        raise ConfigError(f"tta.scales: {type(model).__name__} cannot change its input size; "
                          "scales other than 1.0 need a faster_rcnn or fast_rcnn head in PyTorch (tta.scales: [1.0])")
    min_size, max_size = transform.min_size, transform.max_size
    transform.min_size, transform.max_size = (round(min_size[-1] * scale),), round(max_size * scale)
    try:
        yield
    finally:
        transform.min_size, transform.max_size = min_size, max_size


def tta_views(tta: TTAConfig) -> int:
    """Forward passes per image."""
    return len(tta.scales) * len(VIEWS[tta.flips])


def describe(tta: TTAConfig) -> str:
    """'6 views (hflip × scales 1.25, 1, 0.8), fused by wbf'"""
    scales = ", ".join(f"{s:g}" for s in tta.scales)
    views = tta_views(tta)
    return f"{views} view{'s' if views > 1 else ''} ({tta.flips} × scales {scales}), fused by {tta.fusion}"


def detect_pipeline(model: nn.Module, images: list[torch.Tensor], device: torch.device, config: PipelineConfig, *,
                    augment: bool) -> list[Detections]:
    """What `eval` and `predict` run: `detect`, or with `augment` and `tta.enabled` every view fused; an image
    larger than `tiling:` allows goes through in slices (ops/slicing.py), each slice seen that way."""
    def run(batch: list[torch.Tensor]) -> list[Detections]:
        if augment and config.tta.enabled:
            return detect_augmented(model, batch, device, config.tta, amp=config.train.amp,
                                    max_detections=config.model.head.detections_per_img)
        return [Detections.from_output(out) for out in detect(model, batch, device, amp=config.train.amp)]

    return whole_or_sliced(images, config, run, detect_sliced)


def detect_augmented(model: nn.Module, images: list[torch.Tensor], device: torch.device, tta: TTAConfig, *,
                     amp: bool = False, max_detections: int = 300) -> list[Detections]:
    """`detect` over every view of every image, fused per image; boxes in the images' pixels."""
    views: list[list[Detections]] = [[] for _ in images]
    for scale in tta.scales:
        with input_scale(model, scale):
            for mirror, turns in VIEWS[tta.flips]:
                found = detect(model, [view(image, mirror, turns) for image in images], device, amp=amp)
                for per_image, image, det in zip(views, images, found):
                    height, width = image.shape[-2:]
                    boxes = boxes_to_image(det["boxes"], mirror, turns, width, height)
                    per_image.append(replace(Detections.from_output(det), boxes=boxes.numpy().reshape(-1, 4)))
    return [fuse(per_image, tuple(image.shape[-2:]), tta, max_detections) for per_image, image in zip(views, images)]


def fuse(views: list[Detections], size: tuple[int, int], tta: TTAConfig, max_detections: int) -> Detections:
    """One set of detections from the views' detections of one image (boxes in its pixels)."""
    if tta.iou is None:
        raise ConfigError("tta.iou: not set; a detection pipeline sets it from the head's nms_thresh")
    if tta.fusion == "nms":
        joined = Detections.joined(views)
        boxes, scores, labels = (torch.from_numpy(a) for a in (joined.boxes, joined.scores, joined.labels))
        return joined[batched_nms(boxes, scores, labels, tta.iou)[:max_detections].numpy()]
    return weighted_boxes(views, size, tta.iou, max_detections)
