"""The classic networks of the seeds, exactly as their layer tables give them (for `cvpipe inspect`)."""

from __future__ import annotations

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


CLASSIC = {"lenet5": (lenet5, (1, 32, 32)), "alexnet": (alexnet, (3, 227, 227))}
