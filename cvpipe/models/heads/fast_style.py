"""Fast style transfer (Johnson, Alahi, Fei-Fei 2016): a feed-forward image transformation network trained
for one style with Gatys et al.'s perceptual losses, so that stylizing is one forward pass.

The network as in the paper's supplement (9×9 conv, two stride-2 convs, residual blocks, two up-sampling
stages, 9×9 conv) with instance normalisation and nearest-neighbour up-sampling + convolution instead of
transposed convolutions (no checkerboard artefacts). The loss network is a frozen VGG-16 trunk from the
weights catalogue; it is not part of the model's state (checkpoints hold the transformation network only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cvpipe.config import HeadSettings
from cvpipe.models.heads.base import Head, stack_batch
from cvpipe.models.heads.registry import HeadSpec, register_head
from cvpipe.models.style import STYLE_LAYERS, LayerOutputs, gram, read_style, total_variation, vgg_features


class FastStyleHead(HeadSettings):
    """Fast style transfer (Johnson et al. 2016): an image transformation network trained for one style with
    perceptual losses from a frozen VGG-16 (content at relu2_2, style Gram matrices at relu1_1 … relu5_1, TV)."""

    task: ClassVar[str] = "stylize"
    name: Literal["fast_style"]
    style_image: Path  # the one style this network learns
    style_size: Annotated[int, Field(gt=0)] = 256  # long side the style image is resized to
    loss_weights: str = "vgg16_hed.bsds"  # VGG-16 trunk of the loss network, from the weights catalogue
    channels: Annotated[int, Field(gt=0)] = 32  # width of the first layer (doubles twice)
    # residual blocks between the down- and up-sampling convolutions
    residual_blocks: Annotated[int, Field(ge=0)] = 5
    content_weight: Annotated[float, Field(ge=0)] = 1.0  # weight of the content loss (VGG relu2_2 features)
    style_weight: Annotated[float, Field(ge=0)] = 1e5  # weight of the style loss (Gram matrices)
    tv_weight: Annotated[float, Field(ge=0)] = 1e-4  # weight of the total-variation smoothing

CONTENT_LAYER = "relu2_2"  # Johnson et al. take the content loss at relu2_2 (Gatys: relu4_2)


def conv(cin: int, cout: int, kernel: int, stride: int = 1, *, norm: bool = True, act: bool = True) -> nn.Sequential:
    layers = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout, affine=True))
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv(channels, channels, 3), conv(channels, channels, 3, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TransformNet(nn.Module):
    """RGB [0, 1] → stylized RGB [0, 1], same size (inputs padded to a multiple of 4 and cropped back)."""

    def __init__(self, channels: int = 32, residual_blocks: int = 5):
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            conv(3, c, 9), conv(c, 2 * c, 3, 2), conv(2 * c, 4 * c, 3, 2),
            *(Residual(4 * c) for _ in range(residual_blocks)),
            nn.Upsample(scale_factor=2, mode="nearest"), conv(4 * c, 2 * c, 3),
            nn.Upsample(scale_factor=2, mode="nearest"), conv(2 * c, c, 3),
            conv(c, 3, 9, norm=False, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % 4, 0, -h % 4), mode="replicate")
        return torch.sigmoid(self.body(x))[..., :h, :w]


class FastStyle(Head):
    """`model(images, targets)` → `{loss_content, loss_style, loss_tv}` (weighted); `model(images)` → stylized
    images `[N, 3, H, W]` in [0, 1]. `loss_network` (LayerOutputs over a VGG-16 trunk) is built by the caller
    and kept outside the module's parameters and state."""

    def __init__(self, cfg: FastStyleHead, loss_network: LayerOutputs | None = None):
        super().__init__()
        self.cfg = cfg
        self.net = TransformNet(cfg.channels, cfg.residual_blocks)
        self._loss = {"network": loss_network, "style": None}  # a dict: not registered as a submodule

    def loss_network(self, device: torch.device) -> LayerOutputs:
        network = self._loss["network"]
        if network is None:
            network = vgg_features(self.cfg.loss_weights, device)
        self._loss["network"] = network = network.to(device)
        return network

    def style_grams(self, device: torch.device) -> dict[str, torch.Tensor]:
        if self._loss["style"] is None:
            style = read_style(Path(self.cfg.style_image), self.cfg.style_size, device)
            with torch.no_grad():
                features = self.loss_network(device)(style)
            self._loss["style"] = {k: gram(features[k]) for k in STYLE_LAYERS}
        return {k: v.to(device) for k, v in self._loss["style"].items()}

    def perceptual_losses(self, images: torch.Tensor, stylized: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted content (feature MSE at relu2_2), style (Gram MSE, summed over layers) and TV losses."""
        network = self.loss_network(images.device)
        with torch.no_grad():
            target = network(images)[CONTENT_LAYER]
        out = network(stylized)
        grams = self.style_grams(images.device)
        style = sum(F.mse_loss(gram(out[k]), grams[k].expand(len(stylized), -1, -1)) for k in STYLE_LAYERS)
        return {"content": F.mse_loss(out[CONTENT_LAYER], target), "style": style, "tv": total_variation(stylized)}

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict] | None = None):
        images = stack_batch(images)
        stylized = self.net(images)
        if targets is None:
            return stylized
        parts = self.perceptual_losses(images, stylized)
        cfg = self.cfg
        return {"loss_content": cfg.content_weight * parts["content"], "loss_style": cfg.style_weight * parts["style"],
                "loss_tv": cfg.tv_weight * parts["tv"]}


def _build(config, backbone, num_classes: int) -> FastStyle:
    return FastStyle(config.model.head)  # its own network; the loss network is built when training


register_head(HeadSpec("fast_style", FastStyleHead, _build, uses_backbone=False))
