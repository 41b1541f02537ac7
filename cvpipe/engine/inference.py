"""Running a detector over batches: uint8 images to the device, float [0, 1] there, outputs back to the CPU."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def to_device(images: list[torch.Tensor], device: torch.device, *, channels_last: bool = False) -> list[torch.Tensor]:
    out = []
    for image in images:
        x = image.to(device, non_blocking=True).float().div_(255)
        out.append(x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x)
    return out


def autocast(device: torch.device, enabled: bool):
    """bf16 where the GPU supports it, fp16 otherwise; nothing on CPU/MPS (no gain for these models there)."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.inference_mode()
def detect(model: nn.Module, images: list[torch.Tensor], device: torch.device, *, amp: bool = False) -> list[dict]:
    """Detections per image as float32 CPU tensors, in the input images' pixel coordinates."""
    with autocast(device, amp):
        outputs = model(to_device(images, device))
    return [{k: (v.float() if v.is_floating_point() else v).cpu() for k, v in out.items()} for out in outputs]
