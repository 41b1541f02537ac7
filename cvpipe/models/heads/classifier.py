"""Image classification head: global average pooling of the last backbone level, dropout, one linear layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cvpipe.config import ClassifierHead
from cvpipe.models.backbones import Backbone
from cvpipe.models.heads.base import Head, stack_batch
from cvpipe.models.heads.registry import HeadSpec, register_head


class Classifier(Head):
    """`model(images, targets)` → `{"loss_classifier"}` (targets carry `label`); `model(images)` → logits `[N, K]`.

    Images are float RGB [0, 1] CHW, all of one size within a batch (the pipeline's augmentation resizes or
    crops them); normalised here with the backbone's own mean and std.
    """

    def __init__(self, backbone: Backbone, cfg: ClassifierHead, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(backbone.preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.preprocess.std).view(1, 3, 1, 1), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(backbone.out_channels[-1], num_classes)

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict] | None = None):
        images = stack_batch(images)
        features = self.backbone((images - self.mean) / self.std)[-1].mean((2, 3))
        logits = self.fc(self.dropout(features))
        if targets is None:
            return logits
        labels = torch.stack([t["label"] for t in targets]).reshape(-1)
        return {"loss_classifier": F.cross_entropy(logits, labels)}


def _build(config, backbone, num_classes: int) -> Classifier:
    return Classifier(backbone, config.model.head, num_classes)


register_head(HeadSpec("classifier", ClassifierHead, _build))
