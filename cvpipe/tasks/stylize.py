"""Style transfer (a trained fast-style network): stylized images; the perceptual losses on val (lower is
better); stylized copies with content | style | result beside them; stylized video frames; an NCHW → NCHW
graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.data.records import Dataset
from cvpipe.data.samples import ImageSamples
from cvpipe.io.images import read_image, write_image
from cvpipe.metrics.style import StylizeMetrics
from cvpipe.models.heads.base import stack_batch
from cvpipe.ops.inference import stylize, to_device
from cvpipe.tasks import register_task
from cvpipe.tasks.base import Batches, FrameJob, PredictJob, Task
from cvpipe.viz.draw import side_by_side

STYLIZE_STATS = ("perceptual_loss", "content_loss", "style_loss")


class StylizeTask(Task):
    name = "stylize"
    description = "style transfer"
    stats = STYLIZE_STATS
    headline = ("perceptual_loss",)
    lower_is_better = frozenset(STYLIZE_STATS)
    export_outputs = ("stylized",)

    def samples(self, config: PipelineConfig, dataset: Dataset, transform, *, train: bool = False) -> ImageSamples:
        return ImageSamples(dataset, transform)

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, config: PipelineConfig, dataset: Dataset, batches: Batches,
                 device: torch.device, *, out_dir: Path | None, tta: bool) -> StylizeMetrics:
        """Mean perceptual losses of the stylized val images (the weighted total and the unweighted parts), and the
        style loss of the val images as they are (what stylizing starts from)."""
        model.eval()
        cfg = config.model.head
        sums, count = {"content": 0.0, "style": 0.0, "tv": 0.0, "input_style": 0.0}, 0
        for images, _ in batches:
            x = stack_batch(to_device(images, device))
            parts = model.perceptual_losses(x, model(x))
            parts["input_style"] = model.perceptual_losses(x, x)["style"]  # the content image's own style loss
            for k, v in parts.items():
                sums[k] += float(v) * len(images)
            count += len(images)
        mean = {k: v / max(count, 1) for k, v in sums.items()}
        total = cfg.content_weight * mean["content"] + cfg.style_weight * mean["style"] + cfg.tv_weight * mean["tv"]
        return StylizeMetrics({"perceptual_loss": total, "content_loss": mean["content"], "style_loss": mean["style"],
                               "input_style_loss": mean["input_style"]})

    def output_folders(self, save_images: bool) -> list[str]:
        return ["stylized/"]

    def prepare_predict(self, config: PipelineConfig, save_images: bool) -> dict:
        return {"style": read_image(Path(config.model.head.style_image)) if save_images else None}

    def predict(self, model: nn.Module, images: list[torch.Tensor], names: list[str], job: PredictJob) -> list[dict]:
        """Stylized copies under stylized/ (same relative names, PNG), and content | style | result beside them when
        the style image is given."""
        entries = []
        style = job.extra.get("style")
        for name, image, pixels in zip(names, images, stylize(model, images, job.device, amp=job.config.train.amp)):
            output = Path("stylized") / Path(name).with_suffix(".png")
            job.write(write_image, job.out / output, pixels)
            if style is not None:
                content = image.permute(1, 2, 0).numpy()
                job.write(write_image, job.out / output.with_name(f"{output.stem}_side_by_side.png"),
                          side_by_side(content, style, pixels))
            entries.append({"file": name, "output": str(output)})
        return entries

    def frame(self, model: nn.Module, image: np.ndarray, tensor: torch.Tensor, job: FrameJob) -> tuple[np.ndarray, dict]:
        return stylize(model, [tensor], job.device, amp=job.config.train.amp)[0], {}


register_task(StylizeTask())
