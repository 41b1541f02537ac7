"""Exported models run by their runtimes, called like the PyTorch model they came from (`model(images)` with float
[0, 1] CHW tensors), so that `detect`, `classify`, `segment` and the evaluation use any of them:

- `.onnx` (`cvpipe export --format onnx`): ONNX Runtime's CPU provider; FP32 or INT8 (QDQ) graphs.
- `.xml` + `.bin` (`--format openvino`): OpenVINO's CPU plugin; FP32, FP16-compressed or INT8 IR.

Both carry cvpipe's metadata (`cvpipe_task`, `cvpipe_classes`, `cvpipe_fixed_size`, `cvpipe_pipeline`, the
checkpoint's thresholds), read by io/model_files.py, so an exported file runs without its checkpoint.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from cvpipe.engine.signal_stack import give_valid_stack
from cvpipe.errors import ConfigError
from cvpipe.io.model_files import EXPORTED, PRECISION_KEY, openvino_core, openvino_metadata
from cvpipe.tasks import get_task


class ExportedModel(ABC):
    """What the runners share: the metadata, and a call that hands each graph input to `run_graph`."""

    fixed_size: tuple[int, int] | None = None  # as models.heads.base.Head declares
    region_proposals = None
    input_resizer = None  # an exported graph's input size is fixed at export: test-time scales need PyTorch
    runtime: str  # the --backend name

    def __init__(self, where: str | Path, meta: dict[str, str]):
        if "cvpipe_task" not in meta:
            raise ConfigError(f"{where}: not exported by `cvpipe export` (no cvpipe_task metadata)")
        self.task = meta["cvpipe_task"]
        self.classes = json.loads(meta["cvpipe_classes"])
        fixed = json.loads(meta.get("cvpipe_fixed_size", "null"))
        if fixed:
            self.fixed_size = tuple(fixed)

    def eval(self) -> ExportedModel:
        return self

    def __call__(self, images: list[torch.Tensor] | torch.Tensor):
        return get_task(self.task).run_exported(self.run_graph, images)

    @abstractmethod
    def run_graph(self, x):
        """A float32 numpy input → the graph's outputs, in order."""


class OnnxModel(ExportedModel):
    """An ONNX graph on ONNX Runtime's CPU provider, with the process's thread count."""

    runtime = "onnxruntime"

    def __init__(self, graph: bytes | Path):
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError("--backend onnxruntime needs onnx and onnxruntime: pip install 'cvpipe[onnx]'") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # idle ORT threads would spin and take the cores from the decoding and drawing around them
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = str(graph) if isinstance(graph, Path) else graph
        where = graph if isinstance(graph, Path) else "the exported graph"
        try:
            self.session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise ConfigError(f"{where}: ONNX Runtime cannot load it ({str(e)[:200]})") from None
        super().__init__(where, self.session.get_modelmeta().custom_metadata_map)
        self.input = self.session.get_inputs()[0].name

    def run_graph(self, x):
        return self.session.run(None, {self.input: x})


class OpenVinoModel(ExportedModel):
    """An OpenVINO IR (or an ONNX graph read by OpenVINO) compiled for the CPU, latency first, with the process's
    thread count. OpenVINO computes in bfloat16 by default on CPUs that have it; a model exported at FP32 or INT8
    is run with FP32 where it is not INT8, so that it gives the numbers it was scored with. An FP16 export runs at
    the half precision the CPU has (bfloat16 or float16)."""

    runtime = "openvino"

    def __init__(self, model: bytes | Path):
        core = openvino_core()
        where = model if isinstance(model, Path) else "the exported graph"
        self.source = model  # OpenVINO may keep pointing into bytes it read a model from: they live as long as it does
        try:
            read = core.read_model(str(model) if isinstance(model, Path) else model)
            meta = openvino_metadata(read)
            settings = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
            if meta.get(PRECISION_KEY, "fp32") != "fp16":
                settings["INFERENCE_PRECISION_HINT"] = "f32"
            self.compiled = core.compile_model(read, "CPU", settings)
        except Exception as e:  # OpenVINO raises RuntimeError / its own types for unreadable or foreign files
            raise ConfigError(f"{where}: OpenVINO cannot load it ({str(e)[:200]})") from None
        super().__init__(where, meta)
        self.request = self.compiled.create_infer_request()

    def run_graph(self, x):
        self.request.infer([x], share_inputs=True)
        return [self.request.get_output_tensor(i).data.copy() for i in range(len(self.compiled.outputs))]

    def __del__(self):
        """Released here, so that the thread's signal stack can be made valid again after OpenVINO's CPU plugin
        (engine/signal_stack.py)."""
        self.request = self.compiled = None
        give_valid_stack()


RUNNERS = {"onnxruntime": OnnxModel, "openvino": OpenVinoModel}
READERS = {".onnx": ("onnxruntime", "openvino"), ".xml": ("openvino",)}  # the first runs a file by default


def load_exported(path: Path, backend: str | None = None) -> ExportedModel:
    """The runner for an exported file: its suffix's own runtime (.onnx: ONNX Runtime, .xml: OpenVINO), or
    `backend` where that reads it too (OpenVINO reads ONNX)."""
    path = Path(path)
    if path.suffix not in READERS:
        raise ConfigError(f"{path}: not an exported model (expected {' or '.join(READERS)})")
    readers = READERS[path.suffix]
    if backend is not None and backend not in readers:
        raise ConfigError(f"--weights {path}: a {path.suffix} file runs with --backend {' or '.join(readers)} "
                          "(or auto)")
    if not path.is_file():
        raise ConfigError(f"--weights {path}: no such file; make it with `cvpipe export PIPELINE --format "
                          f"{EXPORTED[path.suffix]}`")
    return RUNNERS[backend or readers[0]](path)
