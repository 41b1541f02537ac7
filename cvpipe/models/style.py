"""Neural style transfer by optimisation (Gatys, Ecker, Bethge 2016) on a VGG-16 convolutional trunk.

The image itself is the parameter: starting from the content image, L-BFGS (or Adam) lowers
content_weight · content loss (feature MSE at relu4_2) + style_weight · style loss (MSE between Gram matrices
at relu1_1 … relu5_1) + tv_weight · total variation. The trunk comes from the weights catalogue
(`vgg16_hed.bsds` offline, or any torchvision VGG-16/19 file a user imports).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cvpipe.errors import DataError, WeightsError
from cvpipe.io.images import read_image

# torchvision vgg16().features / vgg19().features indices of the ReLUs the papers read
VGG16_LAYERS = {"relu1_1": 1, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu4_1": 18, "relu4_2": 20, "relu5_1": 25}
VGG19_LAYERS = {"relu1_1": 1, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu4_1": 20, "relu4_2": 22, "relu5_1": 29}


def vgg_layers(arch: str) -> dict[str, int]:
    """The ReLU indices for a catalogue architecture (`torchvision.vgg16[.features]`, `torchvision.vgg19[.features]`)."""
    name = arch.removeprefix("torchvision.").removesuffix(".features")
    if name not in ("vgg16", "vgg19"):
        raise ValueError(f"style transfer needs a torchvision VGG-16 or VGG-19 trunk, not {arch}")
    return VGG16_LAYERS if name == "vgg16" else VGG19_LAYERS
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"


class LayerOutputs(nn.Module):
    """Runs a sequential trunk up to the deepest requested index and returns `{name: activation}`."""

    def __init__(self, trunk: nn.Sequential, layers: dict[str, int], mean, std):
        super().__init__()
        last = max(layers.values())
        self.trunk = nn.Sequential(*list(trunk)[: last + 1]).eval().requires_grad_(False)
        for module in self.trunk:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # the activation is read after the layer
        self.layers = {index: name for name, index in layers.items()}
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """`image`: float RGB [0, 1], NCHW."""
        x, out = (image - self.mean) / self.std, {}
        for index, module in enumerate(self.trunk):
            x = module(x)
            if index in self.layers:
                out[self.layers[index]] = x
        return out


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices `[N, C, C]` of `[N, C, H, W]` features, divided by C·H·W (so layers weigh alike)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (smoothness prior)."""
    return ((image[..., 1:, :] - image[..., :-1, :]).abs().mean()
            + (image[..., :, 1:] - image[..., :, :-1]).abs().mean())


@dataclass
class StyleLosses:
    content: float
    style: float
    tv: float


class GatysLoss(nn.Module):
    """The weighted sum of content, style and TV losses for an image, against fixed content and style targets."""

    def __init__(self, features: LayerOutputs, content: torch.Tensor, style: torch.Tensor, *,
                 content_weight: float = 1.0, style_weight: float = 1e5, tv_weight: float = 1e-3):
        super().__init__()
        self.features = features
        self.weights = (content_weight, style_weight, tv_weight)
        with torch.no_grad():
            self.content_target = features(content)[CONTENT_LAYER]
            self.style_targets = {k: gram(v) for k, v in features(style).items() if k in STYLE_LAYERS}

    def parts(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.features(image)
        content = F.mse_loss(out[CONTENT_LAYER], self.content_target)
        style = sum(F.mse_loss(gram(out[k]), target) for k, target in self.style_targets.items())
        return content, style, total_variation(image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return sum(w * part for w, part in zip(self.weights, self.parts(image)))

    @torch.no_grad()
    def report(self, image: torch.Tensor) -> StyleLosses:
        """The unweighted parts, for before/after reports."""
        return StyleLosses(*(float(part) for part in self.parts(image)))


def stylize_image(loss: GatysLoss, content: torch.Tensor, *, steps: int = 100, optimizer: str = "lbfgs",
                  lr: float = 0.02) -> torch.Tensor:
    """Optimise a copy of `content` (float RGB [0, 1], 1×3×H×W) for `steps` iterations; pixels kept in [0, 1]."""
    image = content.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([image], lr=1.0, max_iter=steps, history_size=50, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            value = loss(image.clamp(0, 1))
            value.backward()
            return value

        opt.step(closure)
    elif optimizer == "adam":
        opt = torch.optim.Adam([image], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss(image.clamp(0, 1)).backward()
            opt.step()
    else:
        raise ValueError(f"stylize: optimizer must be lbfgs or adam, got {optimizer!r}")
    return image.detach().clamp(0, 1)


def resize_long_side(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 image scaled so that its longer side is `size` (area filter down, cubic up)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """RGB uint8 H×W×3 → float 1×3×H×W in [0, 1] on `device`."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).contiguous().to(device)


def read_style(path: Path, size: int, device: torch.device) -> torch.Tensor:
    """The style image, long side `size`, as a 1×3×H×W float tensor in [0, 1]."""
    try:
        return to_tensor(resize_long_side(read_image(Path(path)), size), device)
    except DataError as e:
        raise DataError(f"style image: {e}") from None


def vgg_features(weights_id: str, device: torch.device) -> LayerOutputs:
    """The ReLU layers the style losses read, from a VGG-16/19 trunk in the weights catalogue."""
    from cvpipe.models.weights import WeightsCatalog, build_arch, load_into

    catalog = WeightsCatalog.load()
    entry = catalog.get(weights_id)
    try:
        layers = vgg_layers(entry.arch)
    except ValueError as e:
        raise WeightsError(f"--weights {weights_id}: {e}; use vgg16_hed.bsds or import a VGG file with "
                           "`cvpipe weights import FILE --arch torchvision.vgg19 --name ID`") from None
    model = build_arch(entry.arch)
    load_into(model, catalog.state_dict(weights_id), mapping=entry.mapping, what=weights_id)
    trunk = model if isinstance(model, torch.nn.Sequential) else model.features
    return LayerOutputs(trunk, layers, entry.preprocess.mean, entry.preprocess.std).to(device)
