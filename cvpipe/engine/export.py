"""`cvpipe export --format onnx`: a trained pipeline's model as one ONNX graph, post-processing included.

The graph is the model's own inference forward, traced:
- detection (every exportable detection head: `HeadSpec.exportable`): `image` float32 [3, H, W] in [0, 1] →
  `boxes` [K, 4] xyxy pixels, `scores` [K], `labels` [K] (0-based class indices), after score threshold and NMS.
  One image per call.
- instance segmentation: the same, plus `masks` [K, 1, H, W] (each instance's mask probabilities).
  SSD and YOLO expect their fixed input size (the `cvpipe_fixed_size` metadata): `detect()` resizes in uint8
  with OpenCV before the graph, as it does before the PyTorch model, and scales the boxes back after it.
- classification: `images` float32 [N, 3, H, W] → `logits` [N, K].
- segmentation: `images` → `logits` [N, K, H, W] (argmax is the label mask).
- style transfer: `images` → `stylized` [N, 3, H, W] in [0, 1].
Normalisation is inside every graph. Metadata (`cvpipe_task`, `cvpipe_classes`, `cvpipe_fixed_size`,
`cvpipe_pipeline`) lets `--backend onnxruntime --weights MODEL.onnx` run it without the checkpoint.
R-CNN and Fast R-CNN are not exportable: their selective-search proposals are computed outside any graph.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.errors import ConfigError
from cvpipe.tasks import get_task

OPSET = 17
GRAPH_VERSION = 2  # bump when onnx_bytes makes a different graph: runtime's cache of exports is keyed by it


def onnx_bytes(model: nn.Module, config: PipelineConfig, classes: list[str],
               thresholds: dict[str, float] | None = None) -> bytes:
    """The eval-mode model traced to ONNX, with cvpipe's metadata (and the checkpoint's best-F1 thresholds,
    engine/threshold.carried_thresholds, where it has them)."""
    import onnx

    from cvpipe.models.heads.registry import head_spec, heads

    spec = head_spec(config.model.head.name)
    if not spec.exportable:
        exportable = sorted(name for name, other in heads().items() if other.exportable)
        raise ConfigError(f"export: head {spec.name!r} cannot be exported to ONNX ({spec.why_not_exportable}); "
                          f"exportable heads: {', '.join(exportable)}")
    task = get_task(config.task)
    # a copy: tracing wants it on the CPU, contiguous and in eval mode, and the caller's model stays as it was
    model = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    x = task.example_input(config, model)
    name, outputs = task.export_input, list(task.export_outputs)
    if x.dim() == 3:  # one CHW image (detectors); a fixed-size one's shapes are constants ORT folds away
        axes = {} if model.fixed_size else {name: {1: "height", 2: "width"}}
    else:
        axes = {name: {0: "batch", 2: "height", 3: "width"}} | {out: {0: "batch"} for out in outputs}
    graph = task.export_graph(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes on shape arithmetic and Python control flow
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (x,), buffer, dynamo=False, opset_version=OPSET, input_names=[name],
                          output_names=outputs, dynamic_axes=axes)
    proto = onnx.load_from_string(buffer.getvalue())
    fixed = model.fixed_size
    for key, value in {"cvpipe_task": config.task, "cvpipe_classes": json.dumps(classes),
                       "cvpipe_fixed_size": json.dumps(list(fixed) if fixed else None),
                       "cvpipe_pipeline": config.name,
                       **{key: str(value) for key, value in (thresholds or {}).items()}}.items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


class OnnxModel:
    """An exported graph run by ONNX Runtime's CPU provider, called like the PyTorch model it came from
    (`model(images)` with float [0, 1] CHW tensors), so `detect`, `classify`, `segment` use either."""

    fixed_size: tuple[int, int] | None = None  # as models.heads.base.Head declares
    region_proposals = None
    input_resizer = None

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
        try:
            self.session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            where = graph if isinstance(graph, Path) else "the exported graph"
            raise ConfigError(f"{where}: ONNX Runtime cannot load it ({str(e)[:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "cvpipe_task" not in meta:
            raise ConfigError(f"{graph}: not exported by `cvpipe export` (no cvpipe_task metadata)")
        self.task = meta["cvpipe_task"]
        self.classes = json.loads(meta["cvpipe_classes"])
        fixed = json.loads(meta.get("cvpipe_fixed_size", "null"))
        if fixed:
            self.fixed_size = tuple(fixed)
        self.input = self.session.get_inputs()[0].name

    def eval(self) -> OnnxModel:
        return self

    def __call__(self, images: list[torch.Tensor] | torch.Tensor):
        return get_task(self.task).run_exported(lambda x: self.session.run(None, {self.input: x}), images)


@dataclass
class ExportReport:
    path: Path
    megabytes: float
    max_abs_difference: float  # ONNX Runtime vs PyTorch on two test inputs (see max_difference)


def export(config: PipelineConfig, weights: Path | None, out: Path) -> ExportReport:
    """Write the ONNX file atomically and check that ONNX Runtime reproduces PyTorch on the example input."""
    from cvpipe.engine.checkpoint import load_trained
    from cvpipe.io.images import write_bytes
    from cvpipe.io.outputs import prepare_file
    from cvpipe.ops.threshold import carried_thresholds

    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: name the file .onnx")
    prepare_file(out, "--out")
    model, classes = load_trained(config, weights, torch.device("cpu"))
    graph = onnx_bytes(model, config, classes, carried_thresholds(weights))
    write_bytes(out, graph)
    return ExportReport(out, len(graph) / 2**20, max_difference(model, OnnxModel(graph), config))


def max_difference(model: nn.Module, runtime: OnnxModel, config: PipelineConfig) -> float:
    """Largest |PyTorch − ONNX Runtime| over the traced example and a second input of other content (and, where
    the size is free, another size), so that a shape the trace froze shows up here rather than in `predict`.
    The task says how outputs compare (detection: infinity when the two found different numbers of boxes)."""
    task = get_task(config.task)
    first = task.example_input(config, model)
    worst = 0.0
    with torch.inference_mode():
        for x in (first, task.second_input(first, model)):
            worst = max(worst, task.export_difference(model, runtime, x))
    return worst
