"""`cvpipe inspect`: per layer output shape, parameters, multiply-accumulates, stride and receptive field.

Hand-written rather than taken from a profiler (fvcore, ptflops, torchinfo) because none of them reports
receptive fields, and cvpipe would need two of them to get the rest. Counting conventions follow the
seeds: MACs count the multiplies of conv / linear layers (bias adds and activations are not counted);
receptive field RF_l = RF_{l-1} + (k_l - 1) * dilation * jump_{l-1}, jump = product of strides so far.
Receptive fields are tracked tensor to tensor through hooked layers; an input made by a functional op
(a residual add, a concat) takes the most recent layer's field, which is exact for chains and the
larger branch for residual blocks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class LayerStat:
    name: str
    type: str
    out_shape: list[int]  # without the batch dimension
    params: int
    macs: int
    stride: int | float  # input pixels per output pixel (jump); fractional after transposed convolutions
    rf: int  # receptive field in input pixels


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _window(m: nn.Module) -> tuple[int, int, int] | None:
    """(kernel, stride, dilation) along H for layers that move a window over space."""
    if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d):
        return _pair(m.kernel_size)[0], _pair(m.stride)[0], _pair(m.dilation)[0]
    if isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
        dilation = _pair(m.dilation)[0] if isinstance(m, nn.MaxPool2d) else 1
        return _pair(m.kernel_size)[0], _pair(m.stride or m.kernel_size)[0], dilation
    return None


def _macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    per_sample_out = out[0].numel()
    if isinstance(m, nn.ConvTranspose2d):
        k = _pair(m.kernel_size)
        return inp[0].numel() * (m.out_channels // m.groups) * k[0] * k[1]
    if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return per_sample_out * (m.in_channels // m.groups) * int(torch.tensor(m.kernel_size).prod())
    if isinstance(m, nn.Linear):
        return per_sample_out * m.in_features
    return 0


def profile(model: nn.Module, input_shape: tuple[int, ...] = (3, 224, 224), *,
            list_input: bool = False) -> tuple[list[LayerStat], dict]:
    """Run one forward pass on zeros and collect a LayerStat per leaf module, in execution order. The input is a
    batch of one, or with `list_input` a list of one [C, H, W] image (torchvision's detectors)."""
    fields: dict[int, tuple[int, float]] = {}  # id(tensor) -> (rf, jump)
    last = [(1, 1.0)]
    stats: list[LayerStat] = []
    keep_alive: list[torch.Tensor] = []  # ids stay unique while the tensors live

    def hook(name: str):
        def fn(m: nn.Module, inputs, output):
            inp = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            out = output[0] if isinstance(output, tuple | list) else output
            if not isinstance(out, torch.Tensor):
                return
            rf, jump = fields.get(id(inp), last[0]) if inp is not None else last[0]
            window = _window(m)
            if window is not None:
                k, s, d = window
                if isinstance(m, nn.ConvTranspose2d):
                    rf, jump = rf + (k - 1) * d * jump / s, jump / s
                else:
                    rf, jump = rf + (k - 1) * d * jump, jump * s
            elif isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and inp is not None and inp.dim() == 4:
                rf, jump = rf + (max(inp.shape[-2:]) - 1) * jump, jump * max(inp.shape[-2:])
            fields[id(out)] = (rf, jump)
            keep_alive.append(out)
            last[0] = (rf, jump)
            stats.append(LayerStat(
                name=name, type=type(m).__name__, out_shape=list(out.shape[1:]),
                params=sum(p.numel() for p in m.parameters(recurse=False)),
                macs=_macs(m, inp, out) if inp is not None else 0, rf=int(round(rf)),
                stride=int(jump) if float(jump).is_integer() else jump,
            ))

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
               if not list(m.children()) and not isinstance(m, nn.Identity)]  # Identity placeholders are not layers
    x = torch.zeros(*input_shape) if list_input else torch.zeros(1, *input_shape)
    fields[id(x)] = (1, 1.0)
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()([x] if list_input else x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    totals = {"params": sum(p.numel() for p in model.parameters()),
              "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "macs": sum(s.macs for s in stats), "layers": len(stats), "input": list(input_shape)}
    return stats, totals


def as_json(stats: list[LayerStat], totals: dict) -> dict:
    return {"layers": [asdict(s) for s in stats], "totals": totals}
