"""Task heads, one file per family, and `build_model`: backbone → neck → head from a pipeline config."""

from __future__ import annotations

import logging

import torch
from torch import nn

from cvpipe.config import PipelineConfig, head_problems
from cvpipe.errors import ConfigError, WeightsError
from cvpipe.models.backbones import build_backbone
from cvpipe.models.weights import WeightsCatalog

log = logging.getLogger(__name__)


def build_model(config: PipelineConfig, num_classes: int, *, catalog: WeightsCatalog | None = None,
                pretrained: bool = True) -> nn.Module:
    """The pipeline's model with a freshly initialised head for `num_classes` classes.

    The backbone starts from `model.backbone.weights` unless `pretrained=False` (the model is about to get
    a checkpoint's weights, so reading the ImageNet file would be wasted work).
    """
    from cvpipe.models.necks import FeatureBody, SSDFeatures

    problems = head_problems(config.model)
    if problems:
        raise ConfigError(problems[0][1] if len(problems) == 1 else "model.head: settings do not fit the neck",
                          [f"{'.'.join(loc)}: {message}" for loc, message in problems])

    whole = config.model.weights  # weights for the whole model replace the backbone's
    backbone_cfg = config.model.backbone
    if not pretrained or whole:
        backbone_cfg = backbone_cfg.model_copy(update={"weights": None})
    backbone = build_backbone(backbone_cfg, catalog=catalog)
    if whole or (not pretrained and config.model.backbone.weights):
        catalog = catalog or WeightsCatalog.load()
        backbone.preprocess = catalog.get(whole or config.model.backbone.weights).preprocess
    head = config.model.head
    if head.name == "faster_rcnn":
        from cvpipe.models.heads.faster_rcnn import FasterRCNNDetector

        model: nn.Module = FasterRCNNDetector(FeatureBody(backbone, config.model.neck), head, num_classes)
    elif head.name == "ssd":
        from cvpipe.models.heads.ssd import SSDDetector

        model = SSDDetector(SSDFeatures(backbone, config.model.neck), head, num_classes)
    else:
        raise ConfigError(f"model.head.name: training and inference for head {head.name!r} are not available yet")
    if whole and pretrained:
        catalog = catalog or WeightsCatalog.load()
        fresh = load_fitting(model, catalog.state_dict(whole), what=whole)
        if fresh:
            log.info("%s: %d tensors do not fit this pipeline's classes and start fresh (%s ...)",
                     whole, len(fresh), fresh[0])
    return model


def load_fitting(model: nn.Module, state: dict[str, torch.Tensor], *, what: str) -> list[str]:
    """Load a whole-model state dict by name; tensors whose shape differs (a class predictor made for other
    classes) keep their fresh initialisation and are returned. A missing or unknown name is an error: the file
    is for another architecture."""
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(f"{what}: does not fit this pipeline's model (another architecture?)",
                           [f"missing {k}" for k in missing[:5]] + [f"unexpected {k}" for k in unexpected[:5]])
    fresh = [k for k, v in state.items() if v.shape != own[k].shape]
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    return fresh
