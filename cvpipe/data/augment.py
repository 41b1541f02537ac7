"""Albumentations pipelines built from the YAML list `- HorizontalFlip: {p: 0.5}`, boxes and masks carried along.

Boxes that leave the image are clipped; those keeping less than `min_visibility` of their area (or fewer
than `min_area` pixels) are dropped with their labels and masks — never a crash.
"""

from __future__ import annotations

import inspect
import re
import warnings
from typing import Any

import albumentations as A
import numpy as np

from cvpipe.config import AugmentConfig
from cvpipe.suggest import did_you_mean

_TRANSFORMS = {
    name: obj for name, obj in vars(A).items()
    if isinstance(obj, type) and issubclass(obj, A.BaseCompose | A.BasicTransform) and not name.startswith("_")
}


def build_transform(entry: str | dict[str, Any]) -> A.BasicTransform | A.BaseCompose:
    """One list item → one transform. Nested composes take `transforms: [...]` in the same notation."""
    if isinstance(entry, str):
        name, params = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        name, params = next(iter(entry.items()))
        params = dict(params or {})
    else:
        raise ValueError(f"expected `- Name: {{params}}` (one key), got {entry!r}")
    cls = _TRANSFORMS.get(name)
    if cls is None:
        raise ValueError(f"unknown albumentations transform {name!r}{did_you_mean(name, _TRANSFORMS)}")
    if "transforms" in params:
        params["transforms"] = [build_transform(t) for t in params["transforms"]]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transform = cls(**params)
    except (TypeError, ValueError) as e:  # albumentations validates its arguments with pydantic
        message = " ".join(re.sub(r"For further information visit \S+", "", str(e)).split())
        raise ValueError(f"{name}: invalid parameters {params}: {message[:300]}") from None
    unknown = [str(w.message) for w in caught if "are not valid for transform" in str(w.message)]
    if unknown:  # albumentations only warns about a misspelt keyword and ignores it
        accepted = [k for k in inspect.signature(cls).parameters if k not in ("args", "kwargs")]
        words = re.findall(r"'([^']+)'", unknown[0])
        hint = did_you_mean(words[0], accepted) if words else ""
        raise ValueError(f"{name}: unknown parameter(s) {', '.join(map(repr, words))}{hint}; "
                         f"{name} takes {', '.join(accepted)}")
    for w in caught:  # anything else albumentations says (deprecations) still reaches the user
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return transform
""


def build_augment(cfg: AugmentConfig, split: str, *, seed: int | None = None) -> A.Compose:
    """The train or eval pipeline; targets: image, bboxes (pascal_voc xyxy) with labels, masks."""
    entries = cfg.train if split == "train" else cfg.eval
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels", "indices"], min_visibility=cfg.min_visibility,
                               min_area=cfg.min_area, clip=True, filter_invalid_bboxes=True)
    with warnings.catch_warnings():  # an empty list warns that no transform uses the boxes; that is fine
        warnings.filterwarnings("ignore", message="Got processor for bboxes")
        return A.Compose([build_transform(e) for e in entries], bbox_params=bbox_params, seed=seed)


def uses_mosaic(transform: A.Compose) -> bool:
    return any(isinstance(t, A.Mosaic) for t in transform.transforms)


PROPOSAL = -1  # the label that marks a region proposal among the boxes albumentations carries


def _inputs(sample: dict) -> dict:
    """A sample's image and its boxes clipped to the image (degenerate ones dropped), as albumentations wants.
    Region proposals, if the sample has them, ride along as boxes labelled PROPOSAL."""
    h, w = sample["image"].shape[:2]
    boxes = sample["boxes"].astype(np.float32).reshape(-1, 4)
    labels = sample["labels"]
    if "proposals" in sample:
        proposals = sample["proposals"].astype(np.float32).reshape(-1, 4)
        boxes = np.concatenate([boxes, proposals])
        labels = np.concatenate([labels, np.full(len(proposals), PROPOSAL, labels.dtype)])
    boxes = np.stack([boxes[:, 0].clip(0, w), boxes[:, 1].clip(0, h), boxes[:, 2].clip(0, w), boxes[:, 3].clip(0, h)], 1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {"image": sample["image"], "bboxes": boxes[keep], "labels": labels[keep], "indices": np.flatnonzero(keep)}


def apply_augment(transform: A.Compose, sample: dict, mosaic: list[dict] | None = None) -> dict:
    """Run `transform` on a sample record; instance masks follow the boxes that survive. `mosaic`: the other
    samples an `A.Mosaic` in the transform may tile beside this one."""
    inputs = _inputs(sample)
    if "masks" in sample:
        if mosaic:
            raise ValueError("augment: Mosaic with instance masks is not supported; remove Mosaic for this data")
        inputs["masks"] = list(sample["masks"])
    if "mask" in sample:
        inputs["mask"] = sample["mask"]
    if mosaic is not None:
        inputs["mosaic_metadata"] = [_inputs(other) for other in mosaic]
    out = transform(**inputs)
    boxes, labels = np.asarray(out["bboxes"], np.float32).reshape(-1, 4), np.asarray(out["labels"], np.int64)
    objects = labels != PROPOSAL
    result = {**sample, "image": out["image"], "boxes": boxes[objects], "labels": labels[objects]}
    if "proposals" in sample:
        result["proposals"] = boxes[~objects]
    if "masks" in sample:
        kept = np.asarray(out["indices"], np.int64)
        result["masks"] = [out["masks"][i] for i in kept]
    if "mask" in sample:
        result["mask"] = out["mask"]
    return result


def augment_image(transform: A.Compose, image: np.ndarray) -> np.ndarray:
    """An image alone through a pipeline built by `build_augment` (classification; predict-time resizing)."""
    return transform(image=image, bboxes=np.zeros((0, 4), np.float32), labels=[], indices=[])["image"]
