"""From a pipeline's data section to batches: split loading with checks, the task's samples (data/samples.py)
through the split's augmentation, loaders. A sample whose image cannot be decoded is reported and left out of
its batch, never fatal.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from cvpipe.config import PipelineConfig, loader_workers
from cvpipe.data.augment import build_augment
from cvpipe.data.check import check_dataset, fixed_copy, summarize
from cvpipe.data.formats import read_dataset
from cvpipe.data.records import Dataset
from cvpipe.errors import DataError
from cvpipe.io.images import PER_FILE_ERRORS
from cvpipe.models.proposals import RegionProposals, proposals_for
from cvpipe.tasks import get_task


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
    data = get_task(config.task).samples(config, dataset, transform, train=train)
    sampler = None
    if train and world > 1:
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=config.train.seed)
        sampler.set_epoch(epoch)
    per_rank = len(data) // world  # samples: a split of large images trains on more windows than it has images
    return DataLoader(
        data, batch_size=config.train.batch_size if train else config.eval.batch_size,
        shuffle=train and sampler is None, sampler=sampler, drop_last=train and per_rank > config.train.batch_size,
        generator=generator, num_workers=workers, collate_fn=collate, persistent_workers=False,
        pin_memory=torch.cuda.is_available(), worker_init_fn=_seed_worker if workers else None,
    )


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
