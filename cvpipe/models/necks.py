"""Necks: what sits between the backbone's feature levels and a head.

`fpn` is torchvision's FeaturePyramidNetwork (lateral 1×1 + top-down 3×3), one output per backbone level and
no extra pooled level, so a head's per-level settings (anchor sizes) line up with `model.backbone.out_indices`.
`none` hands the backbone's deepest level on alone.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from cvpipe.config import NeckConfig
from cvpipe.models.backbones import Backbone


class FeatureBody(nn.Module):
    """Backbone + neck as torchvision's detectors want it: `forward(x) -> OrderedDict`, one `out_channels`."""

    def __init__(self, backbone: Backbone, neck: NeckConfig):
        super().__init__()
        self.backbone = backbone
        if neck.name == "fpn":
            self.fpn: nn.Module | None = FeaturePyramidNetwork(backbone.out_channels, neck.out_channels)
            self.out_channels = neck.out_channels
            self.strides = list(backbone.strides)
        else:
            self.fpn = None
            self.out_channels = backbone.out_channels[-1]
            self.strides = [backbone.strides[-1]]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.backbone(x)
        if self.fpn is None:
            return OrderedDict([("0", levels[-1])])
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(levels)))
