"""Necks: what sits between the backbone's feature levels and a head.

`fpn` is torchvision's FeaturePyramidNetwork (lateral 1×1 + top-down 3×3), one output per backbone level and
no extra pooled level, so a head's per-level settings (anchor sizes) line up with `model.backbone.out_indices`.
`none` hands the backbone's deepest level on alone; `ssd` adds SSD's extra down-sampling blocks.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from timm.layers import ConvNormAct
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


class SSDFeatures(nn.Module):
    """Backbone levels plus SSD's extra down-sampling blocks: 1×1 conv to half depth, then a 3×3 stride-2 conv
    (or, with `depthwise`, a 3×3 depthwise + 1×1 pointwise pair), BatchNorm and ReLU6 after each.

    TF "same" padding throughout (timm's dynamic padding), so 10→5→3→2→1 grids come out as in TF's SSDs.
    """

    def __init__(self, backbone: Backbone, neck: NeckConfig):
        super().__init__()
        self.backbone = backbone
        self.extras = nn.ModuleList()
        channels = backbone.out_channels[-1]
        for depth in neck.extra_blocks:
            layers = [ConvNormAct(channels, depth // 2, 1, act_layer=nn.ReLU6)]
            if neck.depthwise:
                layers += [ConvNormAct(depth // 2, depth // 2, 3, stride=2, padding="same", groups=depth // 2,
                                       act_layer=nn.ReLU6),
                           ConvNormAct(depth // 2, depth, 1, act_layer=nn.ReLU6)]
            else:
                layers.append(ConvNormAct(depth // 2, depth, 3, stride=2, padding="same", act_layer=nn.ReLU6))
            self.extras.append(nn.Sequential(*layers))
            channels = depth
        self.out_channels = [*backbone.out_channels, *neck.extra_blocks]
        self.strides = [*backbone.strides, *(backbone.strides[-1] * 2 ** (i + 1) for i in range(len(neck.extra_blocks)))]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.backbone(x)
        for block in self.extras:
            levels.append(block(levels[-1]))
        return OrderedDict((str(i), f) for i, f in enumerate(levels))
