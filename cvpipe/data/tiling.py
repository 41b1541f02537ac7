"""Cut large images into fixed-size tiles, boxes clipped to each tile (for aerial scenes like tree crowns)."""

from __future__ import annotations

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: step `tile - overlap`, the last tile flush with the far edge."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def tile_boxes(boxes: np.ndarray, x0: int, y0: int, tile: int, min_visible: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes shifted into the tile and clipped; returns (boxes, indices of the kept originals)."""
    shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
    clipped = shifted.clip(0, tile)
    area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
    kept_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (kept_area > 0) & (kept_area >= min_visible * np.maximum(area, 1e-9))
    return clipped[keep], np.flatnonzero(keep)


def tile_image(image: np.ndarray, boxes: np.ndarray, *, tile: int, overlap: int, min_visible: float = 0.4):
    """Yield (x0, y0, tile image, tile boxes, original indices) over the whole image."""
    h, w = image.shape[:2]
    for y0 in tile_starts(h, tile, overlap):
        for x0 in tile_starts(w, tile, overlap):
            crop = image[y0 : y0 + tile, x0 : x0 + tile]
            kept, idx = tile_boxes(boxes, x0, y0, tile, min_visible)
            kept[:, [0, 2]] = kept[:, [0, 2]].clip(0, crop.shape[1])
            kept[:, [1, 3]] = kept[:, [1, 3]].clip(0, crop.shape[0])
            yield x0, y0, crop, kept, idx
