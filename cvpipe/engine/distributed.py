"""Runs launched by `torchrun`: `train` as DistributedDataParallel, `predict` sharded by file.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and the rendezvous); without them everything here is a no-op
and a run is one process. NCCL on CUDA, gloo on CPU. Rank 0 alone writes checkpoints, logs and the merged
outputs; the other ranks wait for it at barriers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from cvpipe.errors import ConfigError

COLLECTIVE_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_name: str = "auto") -> Rank:
    """Join the process group torchrun describes (once per process); a single process gets Rank()."""
    if not launched():
        return Rank()
    cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():  # the other ranks wait at a barrier while rank 0 evaluates: allow it hours
        dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    rank = Rank(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if cuda:
        if rank.local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {rank.local}: this node has {torch.cuda.device_count()} GPU(s); "
                              "start at most that many processes per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(rank.local)
    return rank


def device_for(rank: Rank, device: torch.device) -> torch.device:
    """Each process its own GPU (cuda:LOCAL_RANK); CPU processes share the CPU."""
    if rank.distributed and device.type == "cuda":
        return torch.device("cuda", rank.local)
    return device


def barrier(rank: Rank) -> None:
    if rank.distributed:
        dist.barrier()


def broadcast(rank: Rank, value):
    """Rank 0's `value` on every rank (any picklable object)."""
    if not rank.distributed:
        return value
    box = [value if rank.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown(rank: Rank) -> None:
    if rank.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(rank: Rank, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` (gradients averaged across ranks at each backward) when launched
    by torchrun; the model itself otherwise. `find_unused_parameters`: some heads leave parameters out of a
    step's loss (R-CNN's SVMs and regressor train on detached features)."""
    if not rank.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)
