"""Style transfer "metrics": the perceptual losses on the val images (lower is better)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StylizeMetrics:
    stats: dict[str, float]  # perceptual_loss (weighted total), content_loss, style_loss (unweighted), input_style_loss

    def as_json(self) -> dict:
        return dict(self.stats)
