"""Task heads, one file per family, each registering itself (registry.py), and `build_model`: backbone → neck →
head from a pipeline config."""

from __future__ import annotations

import logging

import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.errors import ConfigError, WeightsError
from cvpipe.models.backbones import build_backbone
from cvpipe.models.heads.registry import head_spec
from cvpipe.models.weights import Preprocess, WeightsCatalog, learnt_tensors

log = logging.getLogger(__name__)


def build_model(config: PipelineConfig, num_classes: int, *, catalog: WeightsCatalog | None = None,
                pretrained: bool = True, preprocess: Preprocess | None = None) -> nn.Module:
    """The pipeline's model with a freshly initialised head for `num_classes` classes, built by the head's
    registration (registry.py).

    The backbone starts from `model.backbone.weights` unless `pretrained=False` (the model is about to get
    a checkpoint's weights, so reading the ImageNet file would be wasted work); `preprocess`, the one such a
    checkpoint records, spares asking the weights' owner for it again (an offline machine may not have it).
    """
    spec = head_spec(config.model.head.name)
    problems = spec.neck_problems(config.model)
    if problems:
        raise ConfigError(problems[0][1] if len(problems) == 1 else "model.head: settings do not fit the neck",
                          [f"{'.'.join(loc)}: {message}" for loc, message in problems])
    if not spec.uses_backbone:
        return spec.build(config, None, num_classes)
    whole = config.model.weights  # weights for the whole model replace the backbone's
    backbone_cfg = config.model.backbone
    if not pretrained or whole:
        backbone_cfg = backbone_cfg.model_copy(update={"weights": None})
    backbone = build_backbone(backbone_cfg, catalog=catalog)
    if preprocess is not None:
        backbone.preprocess = preprocess
    elif whole or (not pretrained and config.model.backbone.weights):
        catalog = catalog or WeightsCatalog.load()
        backbone.preprocess = catalog.get(whole or config.model.backbone.weights).preprocess
    model = spec.build(config, backbone, num_classes)
    if config.model.bn_eps is not None:
        set_batch_norm_eps(model, config.model.bn_eps)
    if whole and pretrained:
        catalog = catalog or WeightsCatalog.load()
        state = catalog.state_dict(whole)
        fresh = (spec.load_whole(model, state, catalog.get(whole)) if spec.load_whole
                 else load_fitting(model, state, what=whole))
        if fresh:
            log.info("%s: %d neck/head tensors do not fit this pipeline and start fresh (%s ...)",
                     whole, len(fresh), fresh[0])
    return model


def set_batch_norm_eps(model: nn.Module, eps: float) -> None:
    """Every BatchNorm's epsilon: PyTorch's, timm's (with its activation) and the frozen ones, which all keep
    running statistics beside it (GroupNorm and LayerNorm do not)."""
    for module in model.modules():
        if hasattr(module, "running_var") and hasattr(module, "eps"):
            module.eps = eps


def reuse_classes(model: nn.Module, config: PipelineConfig, classes: list[str], *,
                  catalog: WeightsCatalog | None = None) -> dict[str, str]:
    """A freshly built model's output rows for the classes its pretrained weights also know, copied from them
    where the head can (`HeadSpec.reuse_classes`); {class: the pretrained label} of those reused."""
    spec = head_spec(config.model.head.name)
    if spec.reuse_classes is None:
        return {}
    return spec.reuse_classes(model, config, classes, catalog or WeightsCatalog.load())


def load_fitting(model: nn.Module, state: dict[str, torch.Tensor], *, what: str) -> list[str]:
    """Load a whole-model state dict by name. The backbone must fit exactly (else the file is for another
    architecture); neck and head tensors load where name and shape fit, and the rest (predictors made for other
    classes or levels) keep their fresh initialisation and are returned."""
    from cvpipe.models.backbones import Backbone

    own, state = learnt_tensors(model.state_dict()), learnt_tensors(state)
    prefix = next(name for name, m in model.named_modules() if isinstance(m, Backbone)) + "."
    missing = sorted(k for k in own if k.startswith(prefix) and k not in state)
    misfit = sorted(k for k in own if k.startswith(prefix) and k in state and state[k].shape != own[k].shape)
    if missing or misfit:
        raise WeightsError(f"{what}: its backbone does not fit this pipeline's (model.backbone.name / timm_args?)",
                           [f"missing {k}" for k in missing[:5]] + [f"shape differs: {k}" for k in misfit[:5]])
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))


def model_preprocess(model: nn.Module) -> Preprocess | None:
    """The preprocessing of the model's backbone (None for a head without one)."""
    from cvpipe.models.backbones import Backbone

    return next((m.preprocess for m in model.modules() if isinstance(m, Backbone)), None)
