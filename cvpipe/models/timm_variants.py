"""Backbones timm lacks, registered in timm's own model registry so that `model.backbone.name` can name them like
any timm model.

`mobilenetv3_large_100_reduced_tail`: MobileNetV3-Large with its last stage at half width (160 → 80 channels, the
last 1×1 convolution 960 → 480), the paper's "reduced tail" (Howard et al. 2019, table 6) that torchvision's
SSDlite320 COCO detector is built on. Written out here because timm's builder takes the stage list as a whole;
the blocks are timm's own, so torchvision's tensors load into it one by one in order.
"""

from __future__ import annotations

from functools import partial

from timm.models import register_model
from timm.models._efficientnet_blocks import SqueezeExcite
from timm.models._efficientnet_builder import (
    decode_arch_def,
    resolve_act_layer,
    resolve_bn_args,
    round_channels,
)
from timm.models._registry import generate_default_cfgs
from timm.models.mobilenetv3 import _cfg, _create_mnv3
from torch import nn

# timm's MobileNetV3-Large stages (mobilenetv3.py), the last two at half width
_REDUCED_TAIL = [
    ["ds_r1_k3_s1_e1_c16_nre"],
    ["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
    ["ir_r3_k5_s2_e3_c40_se0.25_nre"],
    ["ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"],
    ["ir_r2_k3_s1_e6_c112_se0.25"],
    ["ir_r3_k5_s2_e6_c80_se0.25"],
    ["cn_r1_k1_s1_c480"],
]

# no pretrained file of timm's own: its weights come whole with the detector built on it
default_cfgs = generate_default_cfgs({"mobilenetv3_large_100_reduced_tail.untrained": _cfg()})


@register_model
def mobilenetv3_large_100_reduced_tail(pretrained: bool = False, **kwargs) -> nn.Module:
    se_layer = partial(SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU, rd_round_fn=round_channels)
    return _create_mnv3(
        "mobilenetv3_large_100_reduced_tail", pretrained, block_args=decode_arch_def(_REDUCED_TAIL),
        num_features=1280, stem_size=16, round_chs_fn=round_channels,
        norm_layer=partial(nn.BatchNorm2d, **resolve_bn_args(kwargs)),
        act_layer=resolve_act_layer(kwargs, "hard_swish"), se_layer=se_layer, **kwargs)
