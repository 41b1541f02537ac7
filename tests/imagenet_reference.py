"""Whole ImageNet classifiers from the catalogue, the plain reference network the tests compare the product against:
the proof that pretrained weights loaded right (tests/test_pretrained.py)."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch
from timm.data import ImageNetInfo
from torch import nn

from cvpipe.models.weights import Preprocess, WeightsCatalog, build_arch, load_into

_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}


def pretrained_classifier(weights_id: str, *, catalog: WeightsCatalog | None = None) -> tuple[nn.Module, Preprocess]:
    catalog = catalog or WeightsCatalog.load()
    entry = catalog.get(weights_id)
    model = build_arch(entry.arch, num_classes=entry.num_classes)
    load_into(model, catalog.state_dict(weights_id), mapping=entry.mapping, what=weights_id)
    return model.eval(), entry.preprocess


def eval_transform(pre: Preprocess) -> A.Compose:
    """Resize the shorter side, centre-crop, normalise: the torchvision/timm evaluation recipe."""
    return A.Compose([
        A.SmallestMaxSize(max_size=pre.resize, interpolation=_INTERPOLATION[pre.interpolation]),
        A.CenterCrop(pre.size, pre.size),
        A.Normalize(mean=pre.mean, std=pre.std),
    ])


@torch.no_grad()
def top_k(model: nn.Module, image_rgb: np.ndarray, pre: Preprocess, k: int = 5) -> list[tuple[str, float]]:
    """(class description, probability) for the k most likely ImageNet classes of one RGB uint8 image."""
    x = eval_transform(pre)(image=image_rgb)["image"]
    logits = model(torch.from_numpy(x).permute(2, 0, 1)[None].float())
    probs = logits.softmax(-1)[0]
    values, indices = probs.topk(k)
    info = ImageNetInfo()
    return [(info.index_to_description(int(i)), float(v)) for v, i in zip(values, indices)]
