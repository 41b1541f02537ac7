"""Style transfer "metrics": the perceptual losses on the val images (lower is better)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cvpipe.metrics.base import Metrics


@dataclass
class StylizeMetrics(Metrics):
    stats: dict[str, float]  # perceptual_loss (weighted total), content_loss, style_loss (unweighted), input_style_loss

    def as_json(self) -> dict:
        return dict(self.stats)

    def table(self) -> list:
        return ["  ".join(f"{k} {v:.4g}" for k, v in self.stats.items())]

    def plots(self, out_dir: Path) -> list[str]:
        return []  # the losses over training are in loss_curves.png
