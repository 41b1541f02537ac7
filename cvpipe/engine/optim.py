"""Optimizer with parameter groups, and the warm-up + cosine learning-rate schedule.

The schedule is a pure function of the iteration, so a resumed run continues on exactly the same curve.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from cvpipe.config import TrainConfig
from cvpipe.errors import ConfigError

FINAL_LR_RATIO = 0.01  # cosine ends at 1 % of the base rate
WARMUP_START_RATIO = 0.001


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Backbone parameters at `lr × backbone_lr_mult` (and, with `layer_decay`, × each block's layer-wise scale);
    norms and biases (1-d tensors) without weight decay."""
    layered = _layer_groups(model, cfg) if cfg.layer_decay else []
    taken = {id(p) for group in layered for p in group["params"]}
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in taken:
            continue
        in_backbone = ".backbone." in f".{name}"
        no_decay = param.ndim <= 1
        groups.setdefault((in_backbone, no_decay), []).append(param)
    out = []
    for (in_backbone, no_decay), params in sorted(groups.items()):
        out.append({"params": params, "lr_mult": cfg.backbone_lr_mult if in_backbone else 1.0,
                    "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                    "name": f"{'backbone' if in_backbone else 'head'}{'/no_decay' if no_decay else ''}"})
    for k, group in enumerate(layered):
        out.append({"params": group["params"], "lr_mult": cfg.backbone_lr_mult * group["lr_scale"],
                    "weight_decay": group["weight_decay"], "name": f"backbone/layer{k}"})
    return out


def _layer_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    from cvpipe.models.backbones import Backbone

    backbone = next((m for m in model.modules() if isinstance(m, Backbone)), None)
    layered = backbone.layer_groups(cfg.layer_decay, cfg.weight_decay) if backbone is not None else None
    if layered is None:
        what = f"backbone {backbone.timm_name!r} declares no layer grouping" if backbone else "this model has no backbone"
        raise ConfigError(f"train.layer_decay: {what} (timm's group_matcher); use train.backbone_lr_mult instead")
    return [group for group in layered if group["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(iteration: int, total: int, warmup: int) -> float:
    """Linear warm-up from 0.1 % over `warmup` iterations, then cosine decay to FINAL_LR_RATIO at `total`: timm's
    CosineLRScheduler (measured equal to the closed form to 2e-16), rebuilt when `train.time_limit` changes
    `total`."""
    optimizer, scheduler = _schedule(total, warmup)
    scheduler.step_update(iteration)
    return optimizer.param_groups[0]["lr"]


@functools.lru_cache(maxsize=4)
def _schedule(total: int, warmup: int):
    """A scheduler driving a one-parameter optimizer at base rate 1, whose rate is then the factor."""
    import logging

    from timm.scheduler import CosineLRScheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    logging.getLogger("timm.scheduler.cosine_lr").setLevel(logging.ERROR)  # its note on a one-step cosine
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), lr_min=FINAL_LR_RATIO,
                                  warmup_t=warmup, warmup_lr_init=WARMUP_START_RATIO, warmup_prefix=True,
                                  t_in_epochs=False)
    return optimizer, scheduler


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor * group.get("lr_mult", 1.0)
    return base_lr * factor
