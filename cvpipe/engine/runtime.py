"""Inference backends: PyTorch (eager), `compile` (torch.compile of a fixed-size detector's core) and
`onnxruntime` (the whole model exported to ONNX, engine/export.py). Measured on a 2-core CPU
(benches/ssd_vs_opencv.py, benches/export_speed.py): see the README.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cvpipe.config import BACKENDS
from cvpipe.errors import ConfigError


def inference_model(config, weights: Path | None, device: torch.device, backend: str = "pytorch"):
    """(model, classes) ready for `detect` / `classify` / `segment`: a checkpoint (or the pipeline's ready
    weights) on `backend`, or an exported `.onnx` file (onnxruntime only)."""
    from cvpipe.engine.checkpoint import check_classes, load_trained
    from cvpipe.engine.export import OnnxModel, onnx_bytes
    from cvpipe.tasks import check_made_for

    if backend not in BACKENDS:
        raise ConfigError(f"--backend: expected one of {' | '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnxruntime" and device.type != "cpu":
        raise ConfigError(f"--backend onnxruntime runs on the CPU here; on {device} use pytorch or compile "
                          "(or --set train.device=cpu)")
    if weights is not None and Path(weights).suffix == ".onnx":
        if backend != "onnxruntime":
            raise ConfigError(f"--weights {weights}: an ONNX file runs with --backend onnxruntime")
        if not Path(weights).is_file():
            raise ConfigError(f"--weights {weights}: no such file; make it with `cvpipe export PIPELINE --format onnx`")
        model = OnnxModel(Path(weights))
        check_made_for(f"--weights {weights}", model.task, config.task)
        if config.data.classes:
            check_classes(weights, model.classes, config.data.classes)
        return model, model.classes
    model, classes = load_trained(config, weights, device)
    if backend == "compile":
        compile_core(model, config.model.head.name)
    elif backend == "onnxruntime":
        model = OnnxModel(onnx_bytes(model, config, classes))
    return model, classes


def compile_core(model: nn.Module, head: str) -> None:
    """Plug a compiled core into a head that declares one (`compilable`: the fixed-size detectors); pre-processing
    and NMS stay eager."""
    from cvpipe.models.heads.registry import head_spec, heads

    if not head_spec(head).compilable:
        compilable = sorted(name for name, spec in heads().items() if spec.compilable)
        raise ConfigError(f"--backend compile: available for fixed-size heads ({', '.join(compilable)}); "
                          f"{head} runs with pytorch or onnxruntime")
    core, plug = model.inference_core()
    core = core.eval()
    plug(None)  # the core is compiled from the eager modules
    plug(CompiledCore(core))


class CompiledCore:
    """`torch.compile` with inductor's freezing, channels-last. Freezing folds BatchNorm into the convolutions and
    pre-packs the weights: most of the gain on CPU (`options={"freezing": True}` did not give it; the config
    patch around each call does, and leaves the process's other compiles alone)."""

    def __init__(self, module: nn.Module):
        from torch._inductor import config as inductor_config

        self.patch = inductor_config.patch
        self.compiled = torch.compile(module.to(memory_format=torch.channels_last))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.patch(freezing=True):
            return self.compiled(x.contiguous(memory_format=torch.channels_last))
