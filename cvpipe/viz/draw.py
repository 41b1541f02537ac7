"""Drawing boxes and masks on RGB images, and tiling images into a grid (OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np

from cvpipe.data.records import PlacedMask
from cvpipe.ops.detections import Detections


def palette(i: int) -> tuple[int, int, int]:
    """A stable, distinct colour per class index (golden-ratio hue steps)."""
    hue = int((i * 0.618033988749895 % 1.0) * 179)
    rgb = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2RGB)[0, 0]
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def draw_sample(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, classes: list[str],
                masks: list[np.ndarray | PlacedMask] | None = None, scores: np.ndarray | None = None,
                ids: np.ndarray | None = None) -> np.ndarray:
    """Boxes (and masks: image-sized, or placed crops) in their class colours, labelled `name score`; with tracking
    ids `#id name score`."""
    out = image.copy()
    for k, mask in enumerate(masks or []):  # a mask takes its box's colour: its track's, else its class's
        color = np.array(palette(int(ids[k]) if ids is not None else int(labels[k]) if k < len(labels) else k), np.float32)
        placed = mask if isinstance(mask, PlacedMask) else PlacedMask(0, 0, mask)
        h, w = placed.crop.shape
        region = out[placed.y:placed.y + h, placed.x:placed.x + w]
        sel = placed.crop[:region.shape[0], :region.shape[1]].astype(bool)
        region[sel] = (0.55 * region[sel] + 0.45 * color).astype(np.uint8)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for k, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        color = palette(int(ids[k]) if ids is not None else int(label))  # a track keeps its colour
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        name = classes[label] if 0 <= label < len(classes) else str(label)
        text = f"{name} {scores[k]:.2f}" if scores is not None else name
        if ids is not None:
            text = f"#{ids[k]} {text}"
        if len(boxes) <= 50:  # labels on crowded images hide the objects
            draw_label(out, text, (x1, y1, x2, y2), color)
    return out


def draw_detections(image: np.ndarray, found: Detections, classes: list[str]) -> np.ndarray:
    """A detector's or instance segmenter's results drawn: `draw_sample` with their scores, masks and track ids."""
    masks = list(found.masks) if found.masks is not None else None
    return draw_sample(image, found.boxes, found.labels, classes, masks=masks, scores=found.scores, ids=found.track_ids)


LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_scale(shape: tuple[int, ...]) -> float:
    """Label text grows with the image, so it reads the same once the image is shown at a screen's width: 0.5 up
    to 1,000 px, about 11 px tall letters per 1,000 px beyond."""
    return min(max(max(shape[:2]) / 2000, 0.5), 2.0)


def draw_label(image: np.ndarray, text: str, box: tuple[int, int, int, int], color: tuple[int, int, int]) -> None:
    """`text` on a filled tag of the box's colour at its top-left corner (see `label_origin`), in black or white,
    whichever reads better on that colour."""
    scale = label_scale(image.shape)
    thickness = max(1, round(scale * 2))
    (width, height), baseline = cv2.getTextSize(text, LABEL_FONT, scale, thickness)
    pad = max(2, round(height / 4))
    x, y = label_origin((width + 2 * pad, height + baseline + 2 * pad), box, image.shape)
    cv2.rectangle(image, (x, y), (x + width + 2 * pad, y + height + baseline + 2 * pad), color, cv2.FILLED)
    ink = (0, 0, 0) if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 140 else (255, 255, 255)
    cv2.putText(image, text, (x + pad, y + pad + height), LABEL_FONT, scale, ink, thickness, cv2.LINE_AA)


def label_origin(size: tuple[int, int], box: tuple[int, int, int, int], shape: tuple[int, ...]) -> tuple[int, int]:
    """The top-left of a label of `size` (width, height) for `box` (x1, y1, x2, y2): just above the box; below it
    where the image's top edge would cut the label off; inside its top where neither fits. Shifted left where it
    would run past the right edge. Never over the object when there is room around it."""
    width, height = size
    x1, y1, _, y2 = box
    y = y1 - height if y1 - height >= 0 else y2 if y2 + height <= shape[0] else y1
    x = max(0, min(x1, shape[1] - width))
    return x, max(0, min(y, shape[0] - height))


def overlay_mask(image: np.ndarray, mask: np.ndarray, *, alpha: float = 0.45, background: int | None = 0) -> np.ndarray:
    """An RGB image with every class of a label mask tinted in its palette colour (`background` left untinted)."""
    out = image.copy()
    for label in np.unique(mask):
        if label == background:
            continue
        sel = mask == label
        out[sel] = ((1 - alpha) * out[sel] + alpha * np.array(palette(int(label)), np.float32)).astype(np.uint8)
    return out


def grid(images: list[np.ndarray], cell: int = 256, cols: int | None = None) -> np.ndarray:
    """Letterbox each image into a `cell` square and lay them out row by row."""
    cols = cols or int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    canvas = np.full((rows * cell, cols * cell, 3), 32, np.uint8)
    for i, image in enumerate(images):
        scale = cell / max(image.shape[:2])
        small = cv2.resize(image, (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
        r, c = divmod(i, cols)
        canvas[r * cell : r * cell + small.shape[0], c * cell : c * cell + small.shape[1]] = small
    return canvas


def side_by_side(content: np.ndarray, style: np.ndarray, result: np.ndarray) -> np.ndarray:
    """content | style (scaled to the content's height) | result, one image."""
    h = content.shape[0]
    style = cv2.resize(style, (max(1, round(style.shape[1] * h / style.shape[0])), h), interpolation=cv2.INTER_AREA)
    return np.concatenate([content, style, result], axis=1)


RIGHT, WRONG, MISSED = (40, 200, 60), (230, 40, 40), (250, 200, 0)


def draw_judged(image: np.ndarray, detections: tuple, objects: tuple, classes: list[str]) -> np.ndarray:
    """An evaluated image: detections that found an object in green, false positives in red (`name score`),
    objects no detection found in yellow (`missed name`). `detections`: (boxes xyxy, labels, scores, right);
    `objects`: (boxes xyxy, labels, found)."""
    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    boxes, labels, found = objects
    shapes = [(box, MISSED, f"missed {classes[label]}") for box, label, ok in zip(boxes, labels, found) if not ok]
    boxes, labels, scores, right = detections
    shapes += [(box, RIGHT if ok else WRONG, f"{classes[label]} {score:.2f}")
               for box, label, score, ok in zip(boxes, labels, scores, right)]
    for box, color, text in shapes:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        if color != RIGHT and len(shapes) <= 60:
            draw_label(out, text, (x1, y1, x2, y2), color)
    return out
