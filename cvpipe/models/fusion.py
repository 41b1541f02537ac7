"""Inference-time graph work: BatchNorm folded into the convolution that feeds it.

Which BatchNorm follows which convolution is found by running the model once and watching the tensors (a norm
whose input is exactly a convolution's output), so any backbone, neck and head is covered without knowing its
module names: timm's ConvNormAct and MobileNet/EfficientNet blocks, torchvision's Conv2dNormActivation, the
heads' own branches. torch's `fuse_conv_bn_weights` does the arithmetic; the matching is written here because
neither torch (`fuse_modules` needs the names) nor timm has it. A fused model is for inference only: training,
export and the export checks use the unfused one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops import FrozenBatchNorm2d

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d, FrozenBatchNormAct2d)


def conv_norm_pairs(model: nn.Module, run: Callable[[], object]) -> list[tuple[str, str]]:
    """(convolution name, norm name) for every norm in `model` whose input is a convolution's output, as seen when
    `run()` calls the model once. A convolution whose output feeds more than one module (or is called twice) is
    left alone. Not seen: a functional op outside any module that also reads the convolution's output (`bn(y) + y`);
    no backbone cvpipe builds does that, and tests/test_inference_graph.py checks every head's outputs."""
    names = {module: name for name, module in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # id of a convolution's output → (its name, the output)
    consumers: dict[str, list[str]] = {}
    hooks = []

    def after_conv(module, _inputs, output):
        produced[id(output)] = (names[module], output)  # held, so no other tensor takes its id during the run

    def before_any(module, inputs):
        for x in inputs:
            if isinstance(x, torch.Tensor) and id(x) in produced:
                consumers.setdefault(produced[id(x)][0], []).append(names[module])

    for module in names:
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(after_conv))
        if isinstance(module, NORMS) or not list(module.children()):  # who reads each convolution's output
            hooks.append(module.register_forward_pre_hook(before_any))
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    modules = dict(model.named_modules())
    return [(conv, readers[0]) for conv, readers in consumers.items()
            if len(readers) == 1 and isinstance(modules[readers[0]], NORMS)]


def fuse_conv_bn(model: nn.Module, run: Callable[[], object]) -> int:
    """Fold each BatchNorm that `conv_norm_pairs` finds into its convolution (in place; the model must be in eval
    mode); returns how many were folded. A norm with an activation (timm's BatchNormAct2d) keeps its activation."""
    if model.training:
        raise ValueError("fuse_conv_bn: the model must be in eval mode")
    modules = dict(model.named_modules())
    pairs = conv_norm_pairs(model, run)
    for conv_name, norm_name in pairs:
        conv, norm = modules[conv_name], modules[norm_name]
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps,
                                            norm.weight, norm.bias)
        conv.weight, conv.bias = weight, bias
        norm.forward = _after_norm(norm)
    return len(pairs)


def _after_norm(norm: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What is left of a norm once folded: its dropout and activation (timm's norm-act layers), else nothing. The
    norm stays in the model with this as its forward (as Ultralytics' `forward_fuse`), so hooks on it (timm's
    feature taps) still fire."""
    if isinstance(norm, (BatchNormAct2d, FrozenBatchNormAct2d)):
        return lambda x: norm.act(norm.drop(x))
    return lambda x: x
