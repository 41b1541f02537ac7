"""A split's samples as the loader hands them to a model: (uint8 CHW image, target dict), through the split's
augmentation, one class per kind of target (boxes, an image-level label, a label mask). Images stay uint8 through
the loader (4× less to move between processes); the loop converts them on the device. A sample whose image or
annotation cannot be read comes back as ("skipped", reason), never an exception.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from cvpipe.data.augment import apply_augment, augment_image, uses_mosaic
from cvpipe.data.records import Dataset, boxes_of_masks
from cvpipe.errors import DataError
from cvpipe.io.images import PER_FILE_ERRORS, failure_reason


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """HWC uint8 → CHW uint8 tensor (no copy of the pixels beyond making them contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class SplitSamples(torch.utils.data.Dataset, ABC):
    """A split's samples through its augmentation, as (image uint8 CHW, target dict); a sample whose image or
    annotation cannot be read comes back as ("skipped", reason) for the loop to report, never an exception."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            return self.item(i)
        except PER_FILE_ERRORS as e:  # one bad file (or an augmentation its geometry breaks) is not the run's end
            path = self.dataset.records[self.image_index(i)].path
            return ("skipped", f"{path}: {failure_reason(path, e)}")

    def image_index(self, i: int) -> int:
        """The dataset record sample `i` comes from."""
        return i

    def raw(self, i: int) -> dict:
        """Sample `i` before its augmentation (what `augment preview` augments and draws)."""
        return self.dataset.sample(self.image_index(i))

    @abstractmethod
    def item(self, i: int) -> tuple[torch.Tensor, dict]:
        """Sample `i` as (image uint8 CHW, target dict); DataError for an unreadable one."""


class DetectionSamples(SplitSamples):
    """Targets {boxes, labels, image_id}; boxes follow the augmentation (Mosaic included)."""

    def __init__(self, dataset: Dataset, transform, proposals=None):
        """With `proposals` (R-CNN, Fast R-CNN), targets also carry each image's region proposals, computed on the
        decoded image (or found in their cache) and moved by the same geometric augmentation as the boxes."""
        super().__init__(dataset, transform)
        self.mosaic = uses_mosaic(transform)
        self.proposals = proposals

    def _sample(self, i: int) -> dict:
        sample = _boxes_only(self.dataset.sample(i))
        if self.proposals is not None:
            sample["proposals"] = self.proposals(sample["image"])
        return sample

    def item(self, i: int) -> tuple[torch.Tensor, dict]:
        return self._augmented(self._sample(i))

    def _augmented(self, sample: dict) -> tuple[torch.Tensor, dict]:
        sample = apply_augment(self.transform, sample, self.mosaic_partners() if self.mosaic else None)
        target = {"boxes": torch.from_numpy(sample["boxes"]).reshape(-1, 4),
                  "labels": torch.from_numpy(sample["labels"]), "image_id": sample["image_id"]}
        if "proposals" in sample:
            target["proposals"] = torch.from_numpy(sample["proposals"]).reshape(-1, 4)
        return image_tensor(sample["image"]), target

    def mosaic_partners(self, n: int = 3) -> list[dict]:
        """Random other samples for Mosaic, drawn from the transform's seeded generator (resumable runs replay
        them); unreadable ones are left out."""
        partners = []
        for j in self.transform.random_generator.integers(0, len(self.dataset), n):
            try:
                partners.append(self._sample(int(j)))
            except PER_FILE_ERRORS:
                continue
        return partners


class Windows:
    """Training on large images (mixed into a samples class with `_sample(i)` and `_augmented(sample)`): each epoch,
    random `size` windows of them (as many per image as it has slices' worth of pixels), drawn from the transform's
    seeded generator so a resumed run replays them. A box the window cuts keeps at least `min_visible` of its area
    or is left out; a window without objects is kept with probability `empty_share`, else drawn again (up to 10
    times). Images `windowed` marks False go whole."""

    TRIES = 10

    def set_windows(self, size: int, config, windowed: list[bool]) -> None:
        self.size, self.config, self.windowed = size, config, windowed
        self.windows = [i for i, r in enumerate(self.dataset.records)
                        for _ in range(max(1, round(r.width * r.height / size**2)) if windowed[i] else 1)]

    def __len__(self) -> int:
        return len(self.windows)

    def image_index(self, i: int) -> int:
        return self.windows[i]

    def item(self, i: int) -> tuple[torch.Tensor, dict]:
        return self._augmented(self.raw(i))

    def raw(self, i: int) -> dict:
        return self._sample(self.windows[i])

    def _sample(self, i: int) -> dict:
        sample = super()._sample(i)
        return self._window(sample) if self.windowed[i] else sample

    def _window(self, sample: dict) -> dict:
        from cvpipe.data.tiling import tile_boxes

        rng = self.transform.random_generator
        height, width = sample["image"].shape[:2]
        for _ in range(self.TRIES):
            x0 = int(rng.integers(0, max(width - self.size, 0) + 1))
            y0 = int(rng.integers(0, max(height - self.size, 0) + 1))
            boxes, kept = tile_boxes(sample["boxes"].reshape(-1, 4), x0, y0, self.size, self.config.min_visible)
            window = {**sample, "image": np.ascontiguousarray(sample["image"][y0:y0 + self.size, x0:x0 + self.size]),
                      "boxes": boxes, "labels": sample["labels"][kept]}
            if "mask" in sample:
                window["mask"] = np.ascontiguousarray(sample["mask"][y0:y0 + self.size, x0:x0 + self.size])
            if "masks" in sample:
                window["masks"] = [np.ascontiguousarray(sample["masks"][k][y0:y0 + self.size, x0:x0 + self.size])
                                   for k in kept]
            if self.has_objects(window) or rng.random() < self.config.empty_share:
                break
        h, w = window["image"].shape[:2]
        window["boxes"][:, [0, 2]] = window["boxes"][:, [0, 2]].clip(0, w)
        window["boxes"][:, [1, 3]] = window["boxes"][:, [1, 3]].clip(0, h)
        if "proposals" in sample:
            window["proposals"] = tile_boxes(sample["proposals"].reshape(-1, 4), x0, y0, self.size, 0.0)[0]
        return window

    def has_objects(self, window: dict) -> bool:
        return len(window["boxes"]) > 0


class WindowedDetectionSamples(Windows, DetectionSamples):
    """DetectionSamples of random windows (Windows); Mosaic tiles windows too."""

    def __init__(self, dataset: Dataset, transform, proposals=None, *, size: int, config, windowed: list[bool]):
        super().__init__(dataset, transform, proposals)
        self.set_windows(size, config, windowed)


def _boxes_only(sample: dict) -> dict:
    """Detectors use boxes: masks need not be decoded into the augmentation (nor can Mosaic carry them)."""
    return {k: v for k, v in sample.items() if k not in ("masks", "mask")}


class InstanceSamples(SplitSamples):
    """Targets {boxes, labels, masks uint8 [K, H, W], image_id}: each instance's mask goes through the augmentation
    with its box; one whose box the augmentation drops (or whose mask it empties) is dropped with it, and every box
    is re-drawn tight around its augmented mask (a rotated box would be looser)."""

    def item(self, i: int) -> tuple[torch.Tensor, dict]:
        return self._augmented(self._sample(i))

    def _sample(self, i: int) -> dict:
        sample = self.dataset.sample(i)
        if "masks" not in sample:
            if len(sample["boxes"]):
                raise DataError(f"{sample['path']}: its objects have no instance masks (every COCO annotation of the "
                                "image needs a `segmentation`)")
            sample["masks"] = []  # an image of background only
        height, width = sample["image"].shape[:2]
        if any(m.shape != (height, width) for m in sample["masks"]):
            raise DataError(f"{sample['path']}: an instance mask's size differs from the image's {width}×{height}")
        return _instances_only(sample)

    def _augmented(self, sample: dict) -> tuple[torch.Tensor, dict]:
        sample = apply_augment(self.transform, sample)
        masks = np.asarray(sample["masks"], np.uint8).reshape(-1, *sample["image"].shape[:2])
        boxes, keep = boxes_of_masks(masks)
        target = {"boxes": torch.from_numpy(boxes[keep]), "labels": torch.from_numpy(sample["labels"][keep]),
                  "masks": torch.from_numpy(np.ascontiguousarray(masks[keep])), "image_id": sample["image_id"]}
        return image_tensor(sample["image"]), target


class WindowedInstanceSamples(Windows, InstanceSamples):
    """InstanceSamples of random windows (Windows): each kept instance's mask is cut with its box."""

    def __init__(self, dataset: Dataset, transform, *, size: int, config, windowed: list[bool]):
        super().__init__(dataset, transform)
        self.set_windows(size, config, windowed)


def _instances_only(sample: dict) -> dict:
    return {k: v for k, v in sample.items() if k != "mask"}


class ImageSamples(SplitSamples):
    """Targets {image_id, and label where the image has one} for whole-image tasks (classification, style
    transfer's content); the augmentation sees the image alone."""

    def item(self, i: int) -> tuple[torch.Tensor, dict]:
        sample = self.dataset.sample(i)
        target = {"image_id": sample["image_id"]}
        if "label" in sample:
            target["label"] = torch.tensor(sample["label"])
        return image_tensor(augment_image(self.transform, sample["image"])), target


class SegmentationSamples(SplitSamples):
    """Targets {mask int64 HW, image_id}; the augmentation moves the mask with the pixels."""

    def __init__(self, dataset: Dataset, transform, ignore_index: int):
        super().__init__(dataset, transform)
        self.ignore_index = ignore_index

    def item(self, i: int) -> tuple[torch.Tensor, dict]:
        return self._augmented(self._sample(i))

    def _sample(self, i: int) -> dict:
        sample = self.dataset.sample(i)
        mask = checked_mask(sample, len(self.dataset.classes), self.ignore_index)
        return {"image": sample["image"], "mask": mask, "image_id": sample["image_id"],
                "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}

    def _augmented(self, sample: dict) -> tuple[torch.Tensor, dict]:
        sample = apply_augment(self.transform, sample)
        return image_tensor(sample["image"]), {"mask": torch.from_numpy(np.ascontiguousarray(sample["mask"])).long(),
                                               "image_id": sample["image_id"]}


class WindowedSegmentationSamples(Windows, SegmentationSamples):
    """SegmentationSamples of random windows (Windows); a window with no pixel of a class other than the
    background (0) and data.ignore_index counts as empty."""

    def __init__(self, dataset: Dataset, transform, ignore_index: int, *, size: int, config, windowed: list[bool]):
        super().__init__(dataset, transform, ignore_index)
        self.set_windows(size, config, windowed)

    def has_objects(self, window: dict) -> bool:
        mask = window["mask"]
        return bool(((mask != 0) & (mask != self.ignore_index)).any())


def semantic_mask(sample: dict) -> np.ndarray:
    """The class index of every pixel: a semantic-mask PNG as it is, or instance masks painted with their class
    index (later instances over earlier ones) on class 0, the background."""
    if "mask" in sample:
        if sample["mask"] is None:
            raise DataError(f"{sample['path']}: its mask PNG cannot be read")
        return sample["mask"]
    mask = np.zeros(sample["image"].shape[:2], np.uint8)
    for instance, label in zip(sample.get("masks", []), sample["labels"]):
        mask[instance > 0] = label
    return mask


def checked_mask(sample: dict, num_classes: int, ignore_index: int) -> np.ndarray:
    """`semantic_mask`, refused (DataError naming the file) if its size or values do not fit the pipeline."""
    mask = semantic_mask(sample)
    if mask.shape != sample["image"].shape[:2]:
        raise DataError(f"{sample['path']}: mask is {mask.shape[1]}×{mask.shape[0]}, the image "
                        f"{sample['image'].shape[1]}×{sample['image'].shape[0]}")
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if len(bad):
        raise DataError(f"{sample['path']}: mask values {bad.tolist()[:5]} are not classes 0..{num_classes - 1} nor "
                        f"data.ignore_index {ignore_index}; list every class in data.classes")
    return mask
