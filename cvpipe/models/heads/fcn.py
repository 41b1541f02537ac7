"""FCN semantic segmentation (Long, Shelhamer, Darrell 2015) on any backbone's levels.

Each used level gets a 1×1 convolution to class scores. The coarsest scores are up-sampled by a transposed
convolution to the next finer level's grid and added to its scores (skip fusion), and so on; the finest sum
is up-sampled to the input. Every up-sampling by a factor s is a `ConvTranspose2d` with kernel k = 2s, stride
s, padding p = s/2, so that its output size n' = s·n + k − 2p − s is exactly s·n, initialised to bilinear
interpolation and trainable (the paper's "deconvolution" layers). FCN-32s uses the stride-32 level only,
FCN-16s adds stride 16, FCN-8s adds stride 8.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cvpipe.config import HeadSettings, backbone_levels
from cvpipe.models.backbones import Backbone
from cvpipe.models.heads.base import Head, stack_batch
from cvpipe.models.heads.registry import HeadSpec, Problems, register_head


class FCNHead(HeadSettings):
    """FCN (Long et al. 2015): 1×1 convolutions to class scores on the backbone's levels, learnt transposed-
    convolution up-sampling (kernel 2s, padding s/2, bilinear at start) with skip fusion."""

    task: ClassVar[str] = "segment"
    name: Literal["fcn"]
    variant: Literal["32s", "16s", "8s"] = "8s"  # 32s: last level only; 16s: + stride 16; 8s: + stride 8
    learn_upsampling: bool = True  # false: the transposed convolutions stay bilinear interpolation


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """`[channels, channels, k, k]` weights under which a transposed convolution interpolates bilinearly, each
    channel on its own (the FCN reference implementation's initialisation)."""
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    grid = torch.arange(kernel_size, dtype=torch.float32)
    profile = 1 - (grid - centre).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = profile[:, None] * profile[None, :]
    return weight


def upsampling(channels: int, factor: int, *, learn: bool) -> nn.ConvTranspose2d:
    """×`factor` up-sampling: kernel 2·factor, stride factor, padding factor/2, bilinear at start, no bias."""
    if factor % 2:
        raise ValueError(f"fcn: up-sampling factors must be even (k = 2s, p = s/2), got {factor}")
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    layer.weight.data.copy_(bilinear_kernel(channels, 2 * factor))
    layer.weight.requires_grad_(learn)
    return layer


class FCN(Head):
    """`model(images, targets)` → `{"loss_segmentation"}` (targets carry `mask`, class index per pixel);
    `model(images)` → logits `[N, K, H, W]` at the input size. Images are float RGB [0, 1] CHW of one size within a
    batch; they are padded to a multiple of the coarsest stride and the logits cropped back."""

    def __init__(self, backbone: Backbone, cfg: FCNHead, num_classes: int, *, ignore_index: int = 255):
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(backbone.preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.preprocess.std).view(1, 3, 1, 1), persistent=False)
        self.strides = list(backbone.strides)
        self.scores = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in backbone.out_channels)
        learn = cfg.learn_upsampling
        # coarse-to-fine: ×(s_i+1 / s_i) between consecutive levels, then ×s_0 to the input
        self.fuse = nn.ModuleList(upsampling(num_classes, coarse // fine, learn=learn)
                                  for fine, coarse in zip(self.strides[:-1], self.strides[1:]))
        self.final = upsampling(num_classes, self.strides[0], learn=learn)

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict] | None = None):
        images = stack_batch(images)
        h, w = images.shape[-2:]
        multiple = self.strides[-1]
        x = (images - self.mean) / self.std
        x = F.pad(x, (0, -w % multiple, 0, -h % multiple))  # zeros = the mean colour after normalisation
        levels = self.backbone(x)
        out = self.scores[-1](levels[-1])
        for i in range(len(levels) - 2, -1, -1):
            out = self.fuse[i](out) + self.scores[i](levels[i])
        logits = self.final(out)[..., :h, :w]
        if targets is None:
            return logits
        masks = torch.stack([t["mask"] for t in targets]).long()
        return {"loss_segmentation": F.cross_entropy(logits, masks, ignore_index=self.ignore_index)}


def _build(config, backbone, num_classes: int) -> FCN:
    return FCN(backbone, config.model.head, num_classes, ignore_index=config.data.ignore_index)


def _neck_problems(model) -> Problems:
    head, neck = model.head, model.neck
    needed = {"32s": 1, "16s": 2, "8s": 3}[head.variant]
    levels = backbone_levels(model.backbone)
    if neck.name != "none" or levels != needed:
        return [(("model", "backbone", "out_indices"),
                 f"fcn-{head.variant} fuses {needed} backbone level(s) (strides {[8, 16, 32][3 - needed:]}) with neck "
                 f"none; got {levels} level(s) {model.backbone.out_indices}, neck {neck.name}")]
    return []


register_head(HeadSpec("fcn", FCNHead, _build, neck_problems=_neck_problems))
