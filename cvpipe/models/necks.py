"""Necks: what sits between the backbone's feature levels and a head.

`fpn` is torchvision's FeaturePyramidNetwork (lateral 1×1 + top-down 3×3), one output per backbone level (plus
RetinaNet's P6 and P7 with `extra_levels`), so a head's per-level settings (anchor sizes) line up with
`model.backbone.out_indices`;
`pan` adds PANet's bottom-up path after it (YOLO's neck).
`none` hands the backbone's deepest level on alone; `ssd` adds SSD's extra down-sampling blocks.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from cvpipe.config import NeckConfig
from cvpipe.models.backbones import Backbone


class FeatureBody(nn.Module):
    """Backbone + neck as torchvision's detectors want it: `forward(x) -> OrderedDict`, one `out_channels`."""

    def __init__(self, backbone: Backbone, neck: NeckConfig):
        super().__init__()
        self.backbone = backbone
        self.bottom_up: nn.ModuleList | None = None
        if neck.name in ("fpn", "pan"):
            extra, added = None, 0
            if neck.extra_levels == "pool":
                extra, added = LastLevelMaxPool(), 1
            elif neck.extra_levels != "none":  # torchvision's P6/P7 block: from P5 where its input depth is the FPN's
                source = neck.out_channels if neck.extra_levels == "p6p7" else backbone.out_channels[-1]
                extra, added = LastLevelP6P7(source, neck.out_channels), 2
            self.fpn: nn.Module | None = FeaturePyramidNetwork(
                backbone.out_channels, neck.out_channels, extra_blocks=extra,
                norm_layer=nn.BatchNorm2d if neck.norm == "batch" else None)
            self.out_channels = neck.out_channels
            self.strides = list(backbone.strides) + [backbone.strides[-1] * 2 ** (i + 1) for i in range(added)]
            if neck.name == "pan":  # PANet's bottom-up path: n_i = conv3x3(p_i + conv3x3_stride2(n_i-1))
                c = neck.out_channels
                self.bottom_up = nn.ModuleList(
                    nn.ModuleList([ConvNormAct(c, c, 3, stride=2, act_layer=nn.SiLU), ConvNormAct(c, c, 3, act_layer=nn.SiLU)])
                    for _ in backbone.strides[1:])
        else:
            self.fpn = None
            self.out_channels = backbone.out_channels[-1]
            self.strides = [backbone.strides[-1]]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def pyramid_levels(self) -> int:
        """The levels RoI pooling reads: the backbone's (not the neck's extra P6/P7 or pooled level)."""
        return len(self.backbone.strides) if self.fpn is not None else 1

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.backbone(x)
        if self.fpn is None:
            return OrderedDict([("0", levels[-1])])
        merged = list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(levels))).values())
        if self.bottom_up is None:
            return OrderedDict((str(i), f) for i, f in enumerate(merged))
        for i, (down, fuse) in enumerate(self.bottom_up, start=1):
            merged[i] = fuse(merged[i] + down(merged[i - 1]))
        return OrderedDict((str(i), f) for i, f in enumerate(merged))


class SSDFeatures(nn.Module):
    """Backbone levels plus SSD's extra down-sampling blocks: 1×1 conv to half depth, then a 3×3 stride-2 conv
    (or, with `depthwise`, a 3×3 depthwise + 1×1 pointwise pair), BatchNorm and ReLU6 after each.

    TF "same" padding (timm's dynamic padding), so 10→5→3→2→1 grids come out as in TF's SSDs; or, with
    `padding: symmetric`, one pixel each side as torchvision's SSDlite pads.
    """

    def __init__(self, backbone: Backbone, neck: NeckConfig):
        super().__init__()
        self.backbone = backbone
        self.extras = nn.ModuleList()
        channels = backbone.out_channels[-1]
        pad = "same" if neck.padding == "same" else 1
        for depth in neck.extra_blocks:
            layers = [ConvNormAct(channels, depth // 2, 1, act_layer=nn.ReLU6)]
            if neck.depthwise:
                layers += [ConvNormAct(depth // 2, depth // 2, 3, stride=2, padding=pad, groups=depth // 2,
                                       act_layer=nn.ReLU6),
                           ConvNormAct(depth // 2, depth, 1, act_layer=nn.ReLU6)]
            else:
                layers.append(ConvNormAct(depth // 2, depth, 3, stride=2, padding=pad, act_layer=nn.ReLU6))
            self.extras.append(nn.Sequential(*layers))
            channels = depth
        self.out_channels = [*backbone.out_channels, *neck.extra_blocks]
        self.strides = [*backbone.strides, *(backbone.strides[-1] * 2 ** (i + 1) for i in range(len(neck.extra_blocks)))]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.backbone(x)
        for block in self.extras:
            levels.append(block(levels[-1]))
        return OrderedDict((str(i), f) for i, f in enumerate(levels))


class SSDVGGFeatures(nn.Module):
    """The SSD paper's six levels on VGG-16 (torchvision's SSD300), from the backbone's conv4_3 and conv5_3
    outputs: conv4_3 L2-normalised with a learnt scale per channel; conv5_3 through a 3×3 stride-1 max-pool, a
    dilated 3×3 convolution (fc6) and a 1×1 (fc7); then four extra blocks, the last two unpadded. The third
    max-pool of the trunk rounds up, so that a 300-px image gives conv4_3 a 38×38 grid as in the paper."""

    def __init__(self, backbone: Backbone, neck: NeckConfig):
        super().__init__()
        self.scale_weight = nn.Parameter(torch.full((backbone.out_channels[0],), 20.0))
        self.backbone = backbone
        pools = [m for m in backbone.body.modules() if isinstance(m, nn.MaxPool2d)]
        pools[2].ceil_mode = True
        self.fc = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(backbone.out_channels[1], 1024, 3,
                                padding=6, dilation=6), nn.ReLU(inplace=True), nn.Conv2d(1024, 1024, 1),
                                nn.ReLU(inplace=True))

        def block(channels: int, middle: int, out: int, padding: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(channels, middle, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(middle, out, 3, padding=padding, stride=stride), nn.ReLU(inplace=True))

        self.extras = nn.ModuleList([block(1024, 256, 512, 1, 2), block(512, 128, 256, 1, 2),
                                     block(256, 128, 256, 0, 1), block(256, 128, 256, 0, 1)])
        self.out_channels = [backbone.out_channels[0], 1024, 512, 256, 256, 256]
        self.strides = [8, 16, 32, 64, 100, 300]  # at 300 px

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        conv4_3, conv5_3 = self.backbone(x)
        levels = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(conv4_3), self.fc(conv5_3)]
        for block in self.extras:
            levels.append(block(levels[-1]))
        return OrderedDict((str(i), f) for i, f in enumerate(levels))


def build_neck(backbone: Backbone, neck: NeckConfig) -> FeatureBody | SSDFeatures | SSDVGGFeatures:
    """Backbone + the neck `neck.name` names: fpn, pan and none as FeatureBody, ssd's extra blocks as SSDFeatures,
    ssd_vgg's as SSDVGGFeatures."""
    if neck.name == "ssd":
        return SSDFeatures(backbone, neck)
    return SSDVGGFeatures(backbone, neck) if neck.name == "ssd_vgg" else FeatureBody(backbone, neck)
