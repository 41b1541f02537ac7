"""Sliced inference for large images (`tiling:`): overlapping slices run through the model in batches; a
detector's boxes (and an instance segmenter's masks) are shifted back into the image and merged across the seams,
a semantic segmenter's labels are pasted.

The model sees at most `tiling.batch` slices at a time besides the image itself, so memory follows the slice
size, not the image's. Merging: NMS or non-maximum merging (NMM, SAHI's default: the best box absorbs the
boxes it matches and grows to their union), matched by IoS (intersection over the smaller box, so the part of an
object a seam cut matches the whole object the next slice saw) or IoU; or weighted boxes fusion (ensemble-boxes,
IoU only). NMM is written here: torchvision has NMS but no merging, and SAHI's would bring its dependencies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch
from torchvision.ops import batched_nms, box_area, box_iou

from cvpipe.config import PipelineConfig, TilingConfig
from cvpipe.data.records import PlacedMask
from cvpipe.data.tiling import tile_starts
from cvpipe.models.heads.registry import head_spec
from cvpipe.ops.detections import Detections
from cvpipe.ops.fusion import weighted_boxes

Detector = Callable[[list[torch.Tensor]], list[Detections]]  # uint8 CHW images → their detections


def slice_size(config: PipelineConfig) -> int | None:
    """The slice side: `tiling.size`, else the head's input size (None where the head has none)."""
    if config.tiling.size is not None:
        return config.tiling.size
    input_size = head_spec(config.model.head.name).input_size
    return input_size(config.model.head) if input_size else None


def window_size(config: PipelineConfig) -> int | None:
    """The side of the random windows training cuts from images `tiling:` slices: `tiling.window`, else the slice
    side (objects at the same scale in training and at inference). A slice larger than the window shows the
    objects smaller than training did, once both are resized to the model's input."""
    return config.tiling.window or slice_size(config)


def slices_needed(config: PipelineConfig, height: int, width: int) -> int | None:
    """The slice side for an image of this size, or None where it goes through whole."""
    tiling = config.tiling
    size = slice_size(config)
    if tiling.mode == "never" or size is None or max(height, width) <= size:
        return None
    if tiling.mode == "auto" and max(height, width) <= tiling.auto_above * size:
        return None
    return size


def whole_or_sliced(images: list[torch.Tensor], config: PipelineConfig, run: Callable[[list[torch.Tensor]], list],
                    sliced: Callable[[Callable, torch.Tensor, int, TilingConfig], object]) -> list:
    """`run` on the images that go through whole (one call for all of them), `sliced(run, image, size, tiling)` on
    each image `tiling:` slices; the results in the images' order."""
    sizes = [slices_needed(config, *image.shape[-2:]) for image in images]
    whole = iter(run([image for image, size in zip(images, sizes) if size is None]) if None in sizes else [])
    return [next(whole) if size is None else sliced(run, image, size, config.tiling) for image, size in zip(images, sizes)]


def slice_starts(length: int, size: int, overlap: float) -> list[int]:
    """Slice origins along one axis: steps of size × (1 − overlap), the last slice flush with the edge."""
    return tile_starts(length, size, min(size - 1, round(size * overlap)))


def slice_origins(height: int, width: int, size: int, overlap: float) -> list[tuple[int, int]]:
    """(x0, y0) of every slice, row by row."""
    return [(x, y) for y in slice_starts(height, size, overlap) for x in slice_starts(width, size, overlap)]


def through_slices(run: Callable[[list[torch.Tensor]], list], image: torch.Tensor, origins: list[tuple[int, int]],
                   size: int, batch: int) -> Iterator[tuple[tuple[int, int], object]]:
    """((x0, y0), what `run` gave for that slice) for every slice of `image`, `batch` slices per call: the model
    never holds more than that besides the image."""
    for start in range(0, len(origins), batch):
        chunk = origins[start:start + batch]
        yield from zip(chunk, run([image[:, y:y + size, x:x + size] for x, y in chunk]))


def detect_sliced(detector: Detector, image: torch.Tensor, size: int, tiling: TilingConfig) -> Detections:
    """Detections over the whole image (CHW uint8) from its slices, `tiling.batch` slices per call."""
    height, width = image.shape[-2:]
    origins = slice_origins(height, width, size, tiling.overlap)
    found = [det.shifted(x, y) for (x, y), det in through_slices(detector, image, origins, size, tiling.batch)]
    return merge(found, origins, size, tiling, (height, width))


def merge(found: list[Detections], origins: list[tuple[int, int]], size: int, tiling: TilingConfig,
          image_size: tuple[int, int]) -> Detections:
    """One detection per object from each slice's detections (boxes in image pixels), best first; with placed
    masks, NMS keeps each object's best mask and NMM the union of its masks (and of its boxes)."""
    joined = Detections.joined(found)
    if tiling.merge == "wbf":
        return weighted_boxes([joined], image_size, tiling.iou)
    groups = merge_groups(found, origins, size, tiling)
    best = np.array([g[0] for g in groups], np.int64)
    kept = joined[best]
    boxes = _merged_boxes(joined.boxes, groups, tiling)
    if tiling.merge == "nmm" and joined.masks is not None:
        return replace(kept, boxes=boxes, masks=[PlacedMask.union([joined.masks[i] for i in g]) for g in groups])
    return replace(kept, boxes=boxes)


def merge_groups(found: list[Detections], origins: list[tuple[int, int]], size: int,
                 tiling: TilingConfig) -> list[list[int]]:
    """Every object as its detections' indices among all the slices' (in `found` order), its best first; objects
    best first."""
    if tiling.merge == "nms" and tiling.match == "iou":
        joined = Detections.joined(found)
        boxes, scores, labels = (torch.from_numpy(a) for a in (joined.boxes, joined.scores, joined.labels))
        return [[i] for i in batched_nms(boxes, scores, labels, tiling.iou).tolist()]
    scores = np.concatenate([d.scores for d in found]) if found else np.zeros(0, np.float32)
    return _greedy(torch.from_numpy(scores), _seam_matches(found, origins, size, tiling))


def _merged_boxes(boxes: np.ndarray, groups: list[list[int]], tiling: TilingConfig) -> np.ndarray:
    """Each object's box: NMM's union of its group's boxes, else (NMS) its best one's."""
    if tiling.merge == "nmm" and groups:
        return np.stack([np.concatenate([boxes[g, :2].min(0), boxes[g, 2:].max(0)]) for g in groups])
    return boxes[[g[0] for g in groups]].reshape(-1, 4)


def overlap_matrix(a: torch.Tensor, b: torch.Tensor, match: str) -> torch.Tensor:
    if match == "iou":
        return box_iou(a, b)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    smaller = torch.min(box_area(a)[:, None], box_area(b)[None, :]).clamp(min=1e-9)
    return inter / smaller


def _seam_matches(found: list[Detections], origins: list[tuple[int, int]], size: int,
                  tiling: TilingConfig) -> list[np.ndarray]:
    """For every box (in `found` order), the indices of the boxes of the same class in the slices overlapping its own
    that match it. Only overlapping slices are compared (one slice's own duplicates its detector's NMS removed), so
    the work and memory follow the number of slices, not its square."""
    offsets = np.cumsum([0] + [len(d) for d in found])
    extents = [np.concatenate([d.boxes[:, :2].min(0), d.boxes[:, 2:].max(0)]) if len(d) else None for d in found]
    corners = np.asarray(origins).reshape(-1, 2)
    pairs = []  # (box, box it matches) in both directions
    for s in range(len(origins)):
        near = np.abs(corners[s + 1:] - corners[s]).max(1) < size  # the later slices overlapping this one
        for t in (s + 1 + np.flatnonzero(near)).tolist():
            if extents[s] is None or extents[t] is None:
                continue
            # a match overlaps by more than nothing (tiling.iou > 0), so only the boxes reaching into the other
            # slice's boxes' extent can match: in a dense scene the strip along the seam, a tenth of the pairs
            i_near, j_near = _reaching(found[s].boxes, extents[t]), _reaching(found[t].boxes, extents[s])
            if not len(i_near) or not len(j_near):
                continue
            a, b = found[s], found[t]
            overlap = overlap_matrix(torch.from_numpy(a.boxes[i_near]), torch.from_numpy(b.boxes[j_near]), tiling.match)
            hit = ((overlap >= tiling.iou) & torch.from_numpy(a.labels[i_near, None] == b.labels[None, j_near])).numpy()
            k, m = np.nonzero(hit)
            i, j = offsets[s] + i_near[k], offsets[t] + j_near[m]
            pairs.append(np.stack([np.stack([i, j], 1), np.stack([j, i], 1)], 1).reshape(-1, 2))
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    return np.split(pairs[:, 1], np.searchsorted(pairs[:, 0], np.arange(1, offsets[-1])))


def _reaching(boxes: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Indices of the boxes that overlap the rectangle `extent` (x1, y1, x2, y2) by a positive area."""
    return np.flatnonzero((boxes[:, 0] < extent[2]) & (boxes[:, 2] > extent[0])
                          & (boxes[:, 1] < extent[3]) & (boxes[:, 3] > extent[1]))


def _greedy(scores: torch.Tensor, matches: list[np.ndarray]) -> list[list[int]]:
    """Best detection first, with the detections it matches that no better one took: NMS keeps the first of each
    group, NMM merges the group."""
    alive = np.ones(len(scores), bool)
    groups = []
    for i in torch.argsort(scores, descending=True, stable=True).tolist():
        if not alive[i]:
            continue
        alive[i] = False
        group = matches[i][alive[matches[i]]]
        alive[group] = False
        groups.append([i, *group.tolist()])
    return groups


def instances_sliced(segmenter: Callable[[list[torch.Tensor]], list[Detections]], image: torch.Tensor, size: int,
                     tiling: TilingConfig) -> Detections:
    """Instances over the whole image (CHW uint8) from its slices, `tiling.batch` slices per call. `segmenter` gives
    each image's Detections with PlacedMask crops, and so does this (never an image-sized mask per instance)."""
    return detect_sliced(segmenter, image, size, tiling)


def owned_spans(starts: list[int], size: int, length: int) -> list[tuple[int, int]]:
    """Along one axis, the part of each slice whose pixels it labels: those nearer its centre than any other
    slice's, so every pixel is labelled once, by the slice that saw the most context around it."""
    centres = [s + size / 2 for s in starts]
    bounds = [0] + [round((a + b) / 2) for a, b in zip(centres, centres[1:])] + [length]
    return list(zip(bounds, bounds[1:]))


def segment_sliced(segmenter: Callable[[list[torch.Tensor]], list[torch.Tensor]], image: torch.Tensor, size: int,
                   tiling: TilingConfig) -> torch.Tensor:
    """The label mask (uint8 HW) of a large image from its slices' label masks, `tiling.batch` slices per call;
    only the uint8 mask of the whole image is kept, never its class scores."""
    height, width = image.shape[-2:]
    xs, ys = slice_starts(width, size, tiling.overlap), slice_starts(height, size, tiling.overlap)
    spans = {"x": dict(zip(xs, owned_spans(xs, size, width))), "y": dict(zip(ys, owned_spans(ys, size, height)))}
    labels = torch.zeros((height, width), dtype=torch.uint8)
    origins = [(x, y) for y in ys for x in xs]
    for (x, y), mask in through_slices(segmenter, image, origins, size, tiling.batch):
        (x1, x2), (y1, y2) = spans["x"][x], spans["y"][y]
        labels[y1:y2, x1:x2] = mask[y1 - y:y2 - y, x1 - x:x2 - x]
    return labels
