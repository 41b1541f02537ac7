"""Running a detector over batches: uint8 images to the device, float [0, 1] there, outputs back to the CPU."""

from __future__ import annotations

import contextlib

import cv2
import numpy as np
import torch
from torch import nn


def to_device(images: list[torch.Tensor], device: torch.device, *, channels_last: bool = False) -> list[torch.Tensor]:
    """uint8 images → float [0, 1] on `device`.

    On the CPU the conversion is NumPy's, in this thread: a PyTorch op this size runs on PyTorch's OpenMP threads,
    which keep spinning after it and take the cores from an exported model's runtime (ONNX Runtime, OpenVINO) that
    runs next (the COCO SSD at OpenVINO INT8 on 2 cores: 13.3 against 10.0 ms per photo in `detect`)."""
    out = []
    for image in images:
        if device.type == "cpu":
            x = torch.from_numpy(np.divide(image.numpy(), np.float32(255), dtype=np.float32))
        else:
            x = image.to(device, non_blocking=True).float().div_(255)
        out.append(x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x)
    return out


def autocast(device: torch.device, enabled: bool):
    """bf16 where the GPU supports it, fp16 otherwise; nothing on CPU/MPS (no gain for these models there)."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def resize_uint8(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """CHW uint8 → CHW uint8 of `size` (h, w) by OpenCV's bilinear resize, the resize TF/OpenCV SSD users apply.
    Plane by plane (the same pixels as resizing the HWC image): no transposed copy of the full-size image."""
    planes = np.ascontiguousarray(image.numpy())
    return torch.from_numpy(np.stack([cv2.resize(plane, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                                      for plane in planes]))


@torch.inference_mode()
def detect(model: nn.Module, images: list[torch.Tensor], device: torch.device, *, amp: bool = False) -> list[dict]:
    """Detections per image as float32 CPU tensors, in the input images' pixel coordinates.

    A model with a `fixed_size` (SSD) gets its images resized here, on the CPU in uint8: less to copy to the
    device, and the same pixels OpenCV's `blobFromImage` makes. A model with `region_proposals` gets them
    computed here from the uint8 pixels (or read from their cache).
    """
    size = model.fixed_size
    inputs = [resize_uint8(image, size) for image in images] if size else images
    region_proposals = model.region_proposals  # R-CNN, Fast R-CNN: computed here, on the CPU
    kwargs = {}
    if region_proposals is not None:
        kwargs["proposals"] = [torch.from_numpy(region_proposals(image.permute(1, 2, 0).numpy())).to(device)
                               for image in inputs]
    with autocast(device, amp):
        outputs = model(to_device(inputs, device), **kwargs)
    outputs = [{k: (v.float() if v.is_floating_point() else v).cpu() for k, v in out.items()} for out in outputs]
    if size:
        for out, image in zip(outputs, images):
            h, w = image.shape[-2:]
            out["boxes"] = out["boxes"] * torch.tensor([w / size[1], h / size[0]] * 2)
    return outputs


@torch.inference_mode()
def classify(model: nn.Module, images: list[torch.Tensor], device: torch.device, *, amp: bool = False) -> torch.Tensor:
    """Class probabilities `[N, K]` (softmax of the logits) on the CPU for uint8 CHW images of one size."""
    with autocast(device, amp):
        logits = model(to_device(images, device))
    return logits.float().softmax(1).cpu()


@torch.inference_mode()
def segment(model: nn.Module, images: list[torch.Tensor], device: torch.device, *, amp: bool = False) -> list[torch.Tensor]:
    """Label masks (class index per pixel, uint8 HW, CPU) for uint8 CHW images; images of one size share a pass."""
    by_size: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(tuple(image.shape[-2:]), []).append(i)
    masks: list[torch.Tensor | None] = [None] * len(images)
    for indices in by_size.values():
        with autocast(device, amp):
            logits = model(to_device([images[i] for i in indices], device))
        for i, labels in zip(indices, logits.argmax(1).to(torch.uint8).cpu()):
            masks[i] = labels
    return masks


@torch.inference_mode()
def stylize(model: nn.Module, images: list[torch.Tensor], device: torch.device, *, amp: bool = False
            ) -> list[np.ndarray]:
    """Stylized images as HWC uint8 RGB arrays (C-contiguous, ready for OpenCV), one forward pass per image."""
    results = []
    for image in images:
        with autocast(device, amp):
            out = model(to_device([image], device))[0].float()
        pixels = (out.permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
        results.append(np.ascontiguousarray(pixels))
    return results
