"""What the torchvision-based detectors share: class labels 0-based outside, background 0 inside."""

from __future__ import annotations

import torch
from torch import nn


class TorchvisionDetector(nn.Module):
    """`model(images, targets)` → loss dict in training; `model(images)` → `[{boxes, scores, labels}]` in eval.

    Subclasses set `self.model` to a torchvision detector, which reserves label 0 for background; images are
    float RGB in [0, 1], CHW; labels here are 0-based class indices.
    """

    model: nn.Module

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        if targets is not None:
            targets = [{**t, "labels": t["labels"] + 1} for t in targets]
        out = self.model(images, targets)
        if self.training:
            return out
        return [{**d, "labels": d["labels"] - 1} for d in out]
