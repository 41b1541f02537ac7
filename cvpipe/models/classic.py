"""The classic networks of the seeds, exactly as their layer tables give them (for `cvpipe inspect`)."""

from __future__ import annotations

import torch
from torch import nn


def lenet5(num_classes: int = 10) -> nn.Sequential:
    """LeNet-5 on 32x32x1: C1 5x5x6 → S2 avg 2 → C3 5x5x16 → S4 avg 2 → C5 5x5x120 → F6 84 → 10 (ReLU)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2, 2),
        nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
    )


def alexnet(num_classes: int = 1000) -> nn.Sequential:
    """AlexNet on 227x227x3 as in the paper (two-GPU groups on conv2, conv4, conv5; LRN after conv1, conv2)."""
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(6 * 6 * 256, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, num_classes),
    )


def vgg16(num_classes: int = 1000) -> nn.Module:
    """VGG-16 (configuration D): 13 3×3 convolutions in 5 blocks, 3 fully connected layers (torchvision's)."""
    from torchvision.models import vgg16 as torchvision_vgg16

    return torchvision_vgg16(weights=None, num_classes=num_classes)


class Inception(nn.Module):
    """GoogLeNet's Inception module with 1×1 bottlenecks, as in the paper: 1×1 | 1×1→3×3 | 1×1→5×5 |
    3×3 max-pool→1×1, concatenated. Hand-written because torchvision's GoogLeNet uses a 3×3 convolution in the
    "5×5" branch (kept there for its weights)."""

    def __init__(self, cin: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, pool_proj: int):
        super().__init__()

        def conv(i: int, o: int, k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2), nn.ReLU())

        self.branch1 = conv(cin, c1, 1)
        self.branch3 = nn.Sequential(conv(cin, c3_reduce, 1), conv(c3_reduce, c3, 3))
        self.branch5 = nn.Sequential(conv(cin, c5_reduce, 1), conv(c5_reduce, c5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv(cin, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


def inception_3a() -> Inception:
    """The first Inception module of GoogLeNet (3a): 28×28×192 in, 28×28×256 out."""
    return Inception(192, 64, 96, 128, 16, 32, 32)


def resnet_basic_block() -> nn.Module:
    """ResNet's basic block (two 3×3 conv-BN, identity shortcut), torchvision's, at conv2_x of ResNet-18/34."""
    from torchvision.models.resnet import BasicBlock

    return BasicBlock(64, 64)


# name → (builder, input shape C×H×W) for `cvpipe inspect NAME`
CLASSIC = {"lenet5": (lenet5, (1, 32, 32)), "alexnet": (alexnet, (3, 227, 227)), "vgg16": (vgg16, (3, 224, 224)),
           "inception_3a": (inception_3a, (192, 28, 28)), "resnet_basic_block": (resnet_basic_block, (64, 56, 56))}
