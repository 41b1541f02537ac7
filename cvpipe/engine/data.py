"""From a pipeline's data section to batches: split loading with checks, augmentation, loaders.

Images stay uint8 through the loader (4× less to move between processes); the loop converts them on the
device. A sample whose image cannot be decoded is reported and left out of its batch, never fatal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from cvpipe.config import PipelineConfig, loader_workers
from cvpipe.data.augment import apply_augment, augment_image, build_augment, uses_mosaic
from cvpipe.data.check import check_dataset, fixed_copy, summarize
from cvpipe.data.formats import read_dataset
from cvpipe.data.records import Dataset
from cvpipe.errors import DataError
from cvpipe.io.images import PER_FILE_ERRORS, failure_reason
from cvpipe.models.proposals import RegionProposals, proposals_for


def load_split(config: PipelineConfig, split: str, classes: list[str] | None = None) -> tuple[Dataset, list[str]]:
    """Read a split, refuse unknown classes, drop unusable boxes and missing images (returned as warnings)."""
    data = config.data
    if getattr(data, split) is None:
        raise DataError(f"data.{split} is not set: this pipeline has no {split} split; set data.{split} to a "
                        f"split of {data.root} (a sub-folder or an annotation file)")
    dataset = read_dataset(data.root, data.format, getattr(data, split), classes or data.classes)
    problems = check_dataset(dataset, decode=False)
    unknown = [p for p in problems if p.kind == "unknown class"]
    if unknown:
        examples = [str(p) for p in unknown[:5]]
        raise DataError(
            f"{data.root} ({split} split): {len(unknown)} object(s) of classes not in data.classes "
            f"{dataset.classes}; add the names to data.classes, or drop them with "
            f"`cvpipe data check ... --fix OUT`", examples)
    warnings = [f"{kind}: {count} (e.g. {examples[0]})" for kind, count, fatal, examples in summarize(problems)
                if kind != "empty image"]
    if any(p.fatal for p in problems):
        dataset, _ = fixed_copy(dataset, problems)
    if not dataset.records:
        raise DataError(f"{data.root} ({split} split): no usable images", warnings)
    return dataset, warnings


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
            path = self.dataset.records[i].path
            return ("skipped", f"{path}: {failure_reason(path, e)}")

    @abstractmethod
    def item(self, i: int) -> tuple[torch.Tensor, dict]:
        """Sample `i` as (image uint8 CHW, target dict); DataError for an unreadable one."""


class DetectionSamples(SplitSamples):
    """Targets {boxes, labels, image_id}; boxes follow the augmentation (Mosaic included)."""

    def __init__(self, dataset: Dataset, transform, proposals: RegionProposals | None = None):
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
        sample = apply_augment(self.transform, self._sample(i), self.mosaic_partners() if self.mosaic else None)
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


def _boxes_only(sample: dict) -> dict:
    """Detectors use boxes: masks need not be decoded into the augmentation (nor can Mosaic carry them)."""
    return {k: v for k, v in sample.items() if k not in ("masks", "mask")}


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
        sample = self.dataset.sample(i)
        mask = checked_mask(sample, len(self.dataset.classes), self.ignore_index)
        sample = {"image": sample["image"], "mask": mask, "image_id": sample["image_id"],
                  "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}
        sample = apply_augment(self.transform, sample)
        return image_tensor(sample["image"]), {"mask": torch.from_numpy(np.ascontiguousarray(sample["mask"])).long(),
                                               "image_id": sample["image_id"]}


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


def collate(batch: list) -> tuple[list, list, list[str]]:
    """Lists of images and targets (detectors take lists: sizes may differ), plus the skip reasons."""
    def is_skip(item) -> bool:
        return isinstance(item[0], str)  # ("skipped", reason); a sample starts with its image tensor

    skipped = [item[1] for item in batch if is_skip(item)]
    kept = [item for item in batch if not is_skip(item)]
    return [image for image, _ in kept], [target for _, target in kept], skipped


def make_loader(config: PipelineConfig, dataset: Dataset, split: str, *, epoch: int = 0,
                shard: tuple[int, int] = (0, 1)) -> DataLoader:
    """Training order and augmentation draws depend on (seed, epoch) only, so a resumed run replays them.
    `shard` (rank, world size) under DistributedDataParallel: each rank trains on its own 1/world of the
    shuffled split (DistributedSampler, same shuffle on every rank) with its own augmentation draws."""
    train = split == "train"
    seed = config.train.seed + epoch
    rank, world = shard
    transform = build_augment(config.augment, split, seed=seed + 7919 * rank if train else config.train.seed)
    generator = torch.Generator().manual_seed(seed)
    workers = loader_workers(config.train.workers)
    data = samples(config, dataset, transform)
    sampler = None
    if train and world > 1:
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=config.train.seed)
        sampler.set_epoch(epoch)
    per_rank = len(dataset) // world
    return DataLoader(
        data, batch_size=config.train.batch_size if train else config.eval.batch_size,
        shuffle=train and sampler is None, sampler=sampler, drop_last=train and per_rank > config.train.batch_size,
        generator=generator, num_workers=workers, collate_fn=collate, persistent_workers=False,
        pin_memory=torch.cuda.is_available(), worker_init_fn=_seed_worker if workers else None,
    )


def samples(config: PipelineConfig, dataset: Dataset, transform) -> torch.utils.data.Dataset:
    if config.task in ("classify", "stylize"):
        return ImageSamples(dataset, transform)
    if config.task == "segment":
        return SegmentationSamples(dataset, transform, config.data.ignore_index)
    return DetectionSamples(dataset, transform, proposals_for(config))


def _seed_worker(worker_id: int) -> None:
    """Each worker's albumentations/numpy draws follow from torch's per-worker seed (itself from the generator)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transform = info.dataset.transform
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


class _ProposalJob(torch.utils.data.Dataset):
    """Computes (and caches) one image's region proposals per item; an undecodable image is left to training's
    own report."""

    def __init__(self, dataset: Dataset, proposals: RegionProposals):
        self.dataset, self.proposals = dataset, proposals

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> int:
        try:
            self.proposals(self.dataset.sample(i)["image"])
        except PER_FILE_ERRORS:
            pass
        return i


def precompute_proposals(config: PipelineConfig, datasets: list[Dataset], progress=None) -> None:
    """Fill the proposal cache for every image of `datasets` in the loader's worker processes, before training's
    clock starts (as the R-CNN papers precompute them). Cached images cost a file read."""
    proposals = proposals_for(config)
    if proposals is None:
        return
    for dataset in datasets:
        loader = DataLoader(_ProposalJob(dataset, proposals), batch_size=1, collate_fn=list,
                            num_workers=loader_workers(config.train.workers))
        task = progress.add_task("proposals", total=len(loader), info="selective search") if progress else None
        for _ in loader:
            if progress:
                progress.advance(task)
        if progress:
            progress.remove_task(task)
