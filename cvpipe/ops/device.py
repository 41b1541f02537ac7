"""`train.device` → torch.device: auto picks CUDA, then MPS, then CPU; an unavailable device is a clear error."""

from __future__ import annotations

import torch

from cvpipe.errors import ConfigError


def device_type(name: str) -> str:
    """The kind of device `train.device` will give (cuda | mps | cpu), without the checks: for settling defaults
    that depend on it (resolve_device reports an unavailable one when a command runs)."""
    if name == "auto":
        return resolve_device(name).type
    try:
        return torch.device(name).type
    except RuntimeError:
        return "cpu"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {name!r} asked for, but this machine has no CUDA GPU "
                              f"(torch {torch.__version__}); use --set train.device=cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device: {name!r} asked for, but MPS is not available here; use auto or cpu")
    return device
