"""Task heads, one file per family, and `build_model`: backbone → neck → head from a pipeline config."""

from __future__ import annotations

from torch import nn

from cvpipe.config import PipelineConfig, head_problems
from cvpipe.errors import ConfigError
from cvpipe.models.backbones import build_backbone
from cvpipe.models.weights import WeightsCatalog


def build_model(config: PipelineConfig, num_classes: int, *, catalog: WeightsCatalog | None = None,
                pretrained: bool = True) -> nn.Module:
    """The pipeline's model with a freshly initialised head for `num_classes` classes.

    The backbone starts from `model.backbone.weights` unless `pretrained=False` (the model is about to get
    a checkpoint's weights, so reading the ImageNet file would be wasted work).
    """
    from cvpipe.models.necks import FeatureBody

    problems = head_problems(config.model)
    if problems:
        raise ConfigError(problems[0][1] if len(problems) == 1 else "model.head: settings do not fit the neck",
                          [f"{'.'.join(loc)}: {message}" for loc, message in problems])

    backbone_cfg = config.model.backbone
    if not pretrained:
        backbone_cfg = backbone_cfg.model_copy(update={"weights": None})
    backbone = build_backbone(backbone_cfg, catalog=catalog)
    if not pretrained and config.model.backbone.weights:
        catalog = catalog or WeightsCatalog.load()
        backbone.preprocess = catalog.get(config.model.backbone.weights).preprocess
    head = config.model.head
    if head.name == "faster_rcnn":
        from cvpipe.models.heads.faster_rcnn import FasterRCNNDetector

        return FasterRCNNDetector(FeatureBody(backbone, config.model.neck), head, num_classes)
    raise ConfigError(f"model.head.name: training and inference for head {head.name!r} are not available yet")
