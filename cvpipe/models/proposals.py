"""Selective search (Uijlings et al., IJCV 2013): class-agnostic region proposals for R-CNN and Fast R-CNN.

Hand-written on scikit-image's Felzenszwalb segmentation because OpenCV's implementation lives in
opencv-contrib, whose `cv2` would replace the headless build albumentations depends on. Hierarchical grouping
as in the paper: start from the segmentation's regions, repeatedly merge the most similar pair of neighbours
(colour + texture + size + fill similarity), and propose the box of every region ever formed. "Fast mode"
diversifies over colour spaces and segmentation scales and ranks each strategy's boxes by hierarchy level
with the paper's random factor.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import find_objects

from cvpipe.config import PipelineConfig, ProposalsConfig
from cvpipe.paths import atomic_path, cache_dir

COLOUR_BINS = 25
TEXTURE_BINS = 10
ORIENTATIONS = 8


@dataclass
class _Region:
    box: np.ndarray  # x1, y1, x2, y2 (inclusive pixels)
    size: int
    colour: np.ndarray  # L1-normalised histogram
    texture: np.ndarray


def _colour_histograms(image: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    hists = np.zeros((n, image.shape[2] * COLOUR_BINS))
    for c in range(image.shape[2]):
        bins = np.minimum(image[..., c].astype(np.int64) * COLOUR_BINS // 256, COLOUR_BINS - 1)
        np.add.at(hists, (labels.ravel(), c * COLOUR_BINS + bins.ravel()), 1)
    return hists / np.maximum(hists.sum(1, keepdims=True), 1)


def _texture_histograms(image: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """SIFT-like: Gaussian derivatives in 8 orientations per channel, 10 bins each (the paper's texture)."""
    hists = np.zeros((n, image.shape[2] * ORIENTATIONS * TEXTURE_BINS))
    for c in range(image.shape[2]):
        channel = cv2.GaussianBlur(image[..., c].astype(np.float32), (0, 0), 1.0)
        gx, gy = cv2.Sobel(channel, cv2.CV_32F, 1, 0), cv2.Sobel(channel, cv2.CV_32F, 0, 1)
        for o in range(ORIENTATIONS):
            angle = np.pi * o / ORIENTATIONS * 2
            response = np.maximum(np.cos(angle) * gx + np.sin(angle) * gy, 0)
            top = response.max() or 1.0
            bins = np.minimum((response / top * TEXTURE_BINS).astype(np.int64), TEXTURE_BINS - 1)
            offset = (c * ORIENTATIONS + o) * TEXTURE_BINS
            np.add.at(hists, (labels.ravel(), offset + bins.ravel()), 1)
    return hists / np.maximum(hists.sum(1, keepdims=True), 1)


def _neighbours(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = a != b
        lo, hi = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
        pairs |= set(zip(lo.tolist(), hi.tolist()))
    return pairs


def _similarity(a: _Region, b: _Region, image_size: int) -> float:
    colour = np.minimum(a.colour, b.colour).sum()
    texture = np.minimum(a.texture, b.texture).sum()
    size = 1.0 - (a.size + b.size) / image_size
    union = np.concatenate([np.minimum(a.box[:2], b.box[:2]), np.maximum(a.box[2:], b.box[2:])])
    box_area = (union[2] - union[0] + 1) * (union[3] - union[1] + 1)
    fill = 1.0 - (box_area - a.size - b.size) / image_size
    return float(colour + texture + size + fill)


def hierarchical_grouping(image: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """The box of every region, in the order formed: the segmentation's, then each merge of the two most
    similar neighbours, until one region is left (its box last)."""
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    n = int(labels.max()) + 1
    colour, texture = _colour_histograms(image, labels, n), _texture_histograms(image, labels, n)
    sizes = np.bincount(labels.ravel(), minlength=n)
    regions = {}
    for i, (rows, cols) in enumerate(find_objects(labels + 1)):
        box = np.array([cols.start, rows.start, cols.stop - 1, rows.stop - 1])
        regions[i] = _Region(box, int(sizes[i]), colour[i], texture[i])
    image_size = labels.size
    adjacent: dict[int, set[int]] = {i: set() for i in range(n)}
    heap = []
    for a, b in _neighbours(labels):
        adjacent[a].add(b)
        adjacent[b].add(a)
        heap.append((-_similarity(regions[a], regions[b], image_size), a, b))
    heapq.heapify(heap)
    out = [r.box for r in regions.values()]
    alive, next_id = set(regions), n
    while heap:
        _, a, b = heapq.heappop(heap)
        if a not in alive or b not in alive:
            continue  # a stale pair: one side was merged already
        ra, rb = regions[a], regions[b]
        size = ra.size + rb.size
        merged = _Region(np.concatenate([np.minimum(ra.box[:2], rb.box[:2]), np.maximum(ra.box[2:], rb.box[2:])]),
                         size, (ra.colour * ra.size + rb.colour * rb.size) / size,
                         (ra.texture * ra.size + rb.texture * rb.size) / size)
        new, next_id = next_id, next_id + 1
        regions[new] = merged
        alive -= {a, b}
        adjacent[new] = (adjacent.pop(a) | adjacent.pop(b)) - {a, b}
        for other in adjacent[new]:
            adjacent[other] -= {a, b}
            adjacent[other].add(new)
            heapq.heappush(heap, (-_similarity(merged, regions[other], image_size), other, new))
        alive.add(new)
        out.append(merged.box)
    return out


def selective_search(image: np.ndarray, *, scales: tuple[int, ...] = (50, 100), sigma: float = 0.8,
                     colour_spaces: tuple[str, ...] = ("hsv", "lab"), max_proposals: int = 2000,
                     min_size: int = 10, seed: int = 0) -> np.ndarray:
    """Proposals `[N, 4]` (x1, y1, x2, y2, float32, pixel edges) for an RGB uint8 image, best ranked first.

    Each (colour space, Felzenszwalb scale) strategy ranks its boxes as the paper does: position in the
    hierarchy (1 for the last merge, the whole image, counting down to the segmentation's regions) times a
    random number in [0, 1); the strategies' lists are merged by that rank and duplicates dropped.
    """
    from skimage.segmentation import felzenszwalb

    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"selective_search: expected an RGB image H×W×3, got shape {image.shape}")
    rng = np.random.default_rng(seed)
    conversions = {"hsv": cv2.COLOR_RGB2HSV, "lab": cv2.COLOR_RGB2LAB, "rgb": None}
    ranked = []
    for space in colour_spaces:
        converted = image if conversions[space] is None else cv2.cvtColor(image, conversions[space])
        for scale in scales:
            labels = felzenszwalb(image, scale=scale, sigma=sigma, min_size=scale)
            boxes = hierarchical_grouping(converted, labels)
            for position, box in enumerate(reversed(boxes), start=1):
                ranked.append((position * rng.random(), tuple(int(v) for v in box)))
    ranked.sort(key=lambda item: item[0])
    seen, boxes = set(), []
    for _, box in ranked:
        x1, y1, x2, y2 = box
        if box in seen or x2 - x1 + 1 < min_size or y2 - y1 + 1 < min_size:
            continue
        seen.add(box)
        boxes.append((x1, y1, x2 + 1, y2 + 1))
        if len(boxes) == max_proposals:
            break
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def proposals_cache_dir() -> Path:
    """Where proposals are cached: <cache>/proposals (cvpipe/paths.py)."""
    return cache_dir() / "proposals"


class RegionProposals:
    """Selective search with one pipeline's settings, cached on disk by image content and settings.

    Proposals cost ~2 s per 400-px image on a CPU core and training sees each image many times, so the data
    loader computes them once per image (in its workers) and carries them through the geometric augmentation;
    evaluation and prediction find the same images' proposals in the cache.
    """

    def __init__(self, cfg: ProposalsConfig, cache_dir: Path | None = None):
        self.cfg = cfg
        settings = json.dumps(cfg.model_dump(), sort_keys=True)
        self.cache_dir = Path(cache_dir or proposals_cache_dir()) / hashlib.sha1(settings.encode()).hexdigest()[:12]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """`[N, 4]` float32 boxes (x1, y1, x2, y2) for an RGB uint8 H×W×3 image."""
        image = np.ascontiguousarray(image)
        digest = hashlib.sha1(repr(image.shape).encode() + image.tobytes()).hexdigest()
        path = self.cache_dir / f"{digest}.npy"
        try:
            return np.load(path)
        except (OSError, ValueError):  # not cached yet, or a truncated file: compute again
            pass
        boxes = self.compute(image)
        with atomic_path(path, unique=True) as tmp, open(tmp, "wb") as f:  # loader workers may write it at once
            np.save(f, boxes)
        return boxes

    def compute(self, image: np.ndarray) -> np.ndarray:
        """Selective search with these settings, without the cache."""
        cfg = self.cfg
        return selective_search(image, scales=tuple(cfg.scales), sigma=cfg.sigma, colour_spaces=tuple(cfg.colour_spaces),
                                max_proposals=cfg.max, min_size=cfg.min_size)

    def for_tensors(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Proposals for float [0, 1] CHW images (a model called without them), on the images' device."""
        out = []
        for image in images:
            pixels = image.detach().mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            out.append(torch.from_numpy(self(pixels)).to(image.device))
        return out


def proposals_for(config: PipelineConfig) -> RegionProposals | None:
    """The region proposals a pipeline's head works on (R-CNN, Fast R-CNN); None for heads that make their own."""
    cfg = getattr(config.model.head, "proposals", None)
    return RegionProposals(cfg) if cfg is not None else None
