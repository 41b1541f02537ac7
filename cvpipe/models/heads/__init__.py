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

    if config.model.head.name == "fast_style":  # its own network; the loss network is built when training
        from cvpipe.models.heads.fast_style import FastStyle

        return FastStyle(config.model.head)
    whole = config.model.weights  # weights for the whole model replace the backbone's
    backbone_cfg = config.model.backbone
    if not pretrained or whole:
        backbone_cfg = backbone_cfg.model_copy(update={"weights": None})
    backbone = build_backbone(backbone_cfg, catalog=catalog)
    if whole or (not pretrained and config.model.backbone.weights):
        catalog = catalog or WeightsCatalog.load()
        backbone.preprocess = catalog.get(whole or config.model.backbone.weights).preprocess
    head = config.model.head
    if head.name == "classifier":
        from cvpipe.models.heads.classifier import Classifier

        model: nn.Module = Classifier(backbone, head, num_classes)
    elif head.name == "faster_rcnn":
        from cvpipe.models.heads.faster_rcnn import FasterRCNNDetector

        model = FasterRCNNDetector(FeatureBody(backbone, config.model.neck), head, num_classes)
    elif head.name == "ssd":
        from cvpipe.models.heads.ssd import SSDDetector

        model = SSDDetector(SSDFeatures(backbone, config.model.neck), head, num_classes)
    elif head.name == "yolo":
        from cvpipe.models.heads.yolo import YOLODetector

        model = YOLODetector(FeatureBody(backbone, config.model.neck), head, num_classes)
    elif head.name == "fast_rcnn":
        from cvpipe.models.heads.fast_rcnn import FastRCNNDetector

        model = FastRCNNDetector(FeatureBody(backbone, config.model.neck), head, num_classes)
    elif head.name == "fcn":
        from cvpipe.models.heads.fcn import FCN

        model = FCN(backbone, head, num_classes, ignore_index=config.data.ignore_index)
    elif head.name == "rcnn":
        from cvpipe.models.heads.rcnn import RCNNDetector

        model = RCNNDetector(backbone, head, num_classes)
    else:
        raise ConfigError(f"model.head.name: training and inference for head {head.name!r} are not available yet")
    if whole and pretrained:
        catalog = catalog or WeightsCatalog.load()
        fresh = load_fitting(model, catalog.state_dict(whole), what=whole)
        if fresh:
            log.info("%s: %d neck/head tensors do not fit this pipeline and start fresh (%s ...)",
                     whole, len(fresh), fresh[0])
    return model


def load_fitting(model: nn.Module, state: dict[str, torch.Tensor], *, what: str) -> list[str]:
    """Load a whole-model state dict by name. The backbone must fit exactly (else the file is for another
    architecture); neck and head tensors load where name and shape fit, and the rest (predictors made for other
    classes or levels) keep their fresh initialisation and are returned."""
    from cvpipe.models.backbones import Backbone

    def tensors(d: dict) -> dict[str, torch.Tensor]:
        return {k: v for k, v in d.items() if not k.endswith("num_batches_tracked")}

    own, state = tensors(model.state_dict()), tensors(state)
    prefix = next(name for name, m in model.named_modules() if isinstance(m, Backbone)) + "."
    missing = sorted(k for k in own if k.startswith(prefix) and k not in state)
    misfit = sorted(k for k in own if k.startswith(prefix) and k in state and state[k].shape != own[k].shape)
    if missing or misfit:
        raise WeightsError(f"{what}: its backbone does not fit this pipeline's (model.backbone.name / timm_args?)",
                           [f"missing {k}" for k in missing[:5]] + [f"shape differs: {k}" for k in misfit[:5]])
    fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))
