"""Tile geometry: where tiles (or slices, or training windows) start along an axis, and boxes clipped to one."""

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
