"""Image classification head: global average pooling of the last backbone level, dropout, one linear layer."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cvpipe.config import ReusesClasses
from cvpipe.errors import WeightsError
from cvpipe.models.backbones import Backbone
from cvpipe.models.heads.base import Head, stack_batch
from cvpipe.models.heads.registry import HeadSpec, register_head


class ClassifierHead(ReusesClasses):
    """Global pooling + dropout + linear layer over the last feature level; `reuse_classes` from the classifier
    of `model.backbone.weights`."""

    task: ClassVar[str] = "classify"
    name: Literal["classifier"]
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # dropout before the linear layer


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


def pretrained_linear(model: Classifier, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """An ImageNet classifier file's final linear layer (weight, bias): its tensors after those the backbone takes
    (loaded in order, as `build_backbone` loads them), where they are one linear layer over the backbone's last
    features. None where the backbone stops earlier (MobileNetV2 and EfficientNet need `feature_nodes: [bn2]`,
    the 1280-channel head convolution) or the file has no classifier."""
    from cvpipe.models.weights import learnt_tensors

    tail = list(learnt_tensors(state).values())[len(learnt_tensors(model.backbone.body.state_dict())):]
    if len(tail) != 2 or tail[0].ndim != 2 or tail[0].shape[1] != model.fc.in_features:
        return None
    return tail[0], tail[1]


def load_classifier(model: Classifier, state: dict[str, torch.Tensor], entry) -> list[str]:
    """A whole ImageNet classifier file (`model.weights`, torchvision's or timm's layout): the backbone tensor by
    tensor in order, and its final linear layer into `fc`. Returns the tensors left fresh."""
    from cvpipe.models.weights import load_into

    load_into(model.backbone.body, state, mapping="position", what=entry.id, allow_unused_tail=True)
    linear = pretrained_linear(model, state)
    if linear is None:
        raise WeightsError(f"{entry.id}: after the backbone the file holds no linear layer of {model.fc.in_features} "
                           "inputs; end the backbone where its classifier starts (model.backbone.feature_nodes, e.g. "
                           "[bn2])")
    if linear[0].shape != model.fc.weight.shape:
        return ["fc.weight", "fc.bias"]
    with torch.no_grad():
        model.fc.weight.copy_(linear[0])
        model.fc.bias.copy_(linear[1])
    return []


def reuse_classifier_rows(model: Classifier, config, classes: list[str], catalog) -> dict[str, str]:
    """`model.head.reuse_classes`: the output rows (weight row and bias) of the classes the backbone weights'
    classifier also has start from its rows; the others stay fresh. Returns {class: the pretrained label}."""
    from cvpipe.models.class_match import cannot_reuse, match_classes, reusable_labels

    head, weights_id = config.model.head, config.model.backbone.weights
    labels = reusable_labels(head, weights_id, catalog, "classifier", key="model.backbone.weights")
    if labels is None:
        return {}
    linear = pretrained_linear(model, catalog.state_dict(weights_id))
    if linear is None or linear[0].shape[0] != len(labels):
        return cannot_reuse(head, f"{weights_id}'s classifier does not read this backbone's last features (end it where the "
                      "classifier starts: model.backbone.feature_nodes, e.g. [bn2])")
    rows = match_classes(classes, labels, head.class_map)
    with torch.no_grad():
        for i, k in rows.items():
            model.fc.weight[i] = linear[0][k]
            model.fc.bias[i] = linear[1][k]
    return {classes[i]: labels[k] for i, k in rows.items()}


register_head(HeadSpec("classifier", ClassifierHead, _build, load_whole=load_classifier,
                       reuse_classes=reuse_classifier_rows))
