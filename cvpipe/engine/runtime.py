"""Inference runtimes for fixed-size detectors (SSD, YOLO): eager PyTorch, torch.compile, ONNX Runtime.

Pre-processing, default boxes and NMS stay in PyTorch; only the model's core (features + predictors,
`inference_core()`) moves. Measured on a 2-core CPU (benches/ssd_vs_opencv.py): see the README.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from cvpipe.config import RUNTIMES
from cvpipe.errors import ConfigError


def use_runtime(model: nn.Module, runtime: str, device: torch.device) -> None:
    """Switch `model`'s inference to `runtime` in place; `eager` leaves it as it is."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime: expected one of {' | '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "eager":
        return
    if not hasattr(model, "inference_core"):
        raise ConfigError(f"--runtime {runtime}: available for fixed-size heads (ssd, yolo); "
                          f"{type(model).__name__} runs eager only")
    core, plug = model.inference_core()
    core = core.eval()
    plug(None)  # the core is traced or compiled from the eager modules
    if runtime == "compile":
        plug(CompiledCore(core))
    else:
        if device.type != "cpu":
            raise ConfigError(f"--runtime onnx runs on the CPU here; on {device} use --runtime compile or eager")
        plug(OnnxCore(core, model.fixed_size))


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


class OnnxCore:
    """An `nn.Module` exported to ONNX and run by ONNX Runtime's CPU provider, one session per batch size: a
    fixed batch axis measured 15–20 % faster than a dynamic one."""

    def __init__(self, module: nn.Module, size: tuple[int, int]):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ConfigError("--runtime onnx needs onnx and onnxruntime: pip install 'cvpipe[onnx]'") from None
        self.module, self.size = module.cpu(), size
        self.sessions: dict[int, object] = {}

    def export(self, batch: int) -> bytes:
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the tracer's notes about shape arithmetic: the size is fixed
            warnings.simplefilter("ignore")
            torch.onnx.export(self.module, (torch.zeros(batch, 3, *self.size),), buffer, dynamo=False,
                              opset_version=17, input_names=["images"], output_names=["boxes", "logits"])
        return buffer.getvalue()

    def session(self, batch: int):
        import onnxruntime

        if batch in self.sessions:
            return self.sessions[batch]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # idle ORT threads would spin and take the cores from the PyTorch pre- and post-processing around them
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions[batch] = onnxruntime.InferenceSession(self.export(batch), options,
                                                            providers=["CPUExecutionProvider"])
        return self.sessions[batch]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, logits = self.session(len(x)).run(None, {"images": x.detach().cpu().numpy()})
        return torch.from_numpy(boxes), torch.from_numpy(logits)
