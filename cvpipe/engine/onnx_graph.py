"""A trained pipeline's model as one ONNX graph, post-processing included (what `cvpipe export` writes, converts
and quantizes, and what `--backend onnxruntime|openvino` runs from cvpipe's cache).

The graph is the model's own inference forward, traced:
- detection (every exportable detection head: `HeadSpec.exportable`): `image` float32 [1, 3, H, W] in [0, 1] →
  `boxes` [K, 4] xyxy pixels, `scores` [K], `labels` [K] (0-based class indices), after score threshold and NMS.
  One image per call (a batch axis of 1: NMS inside the graph leaves each image its own K).
- instance segmentation: the same, plus `masks` [K, 1, H, W] (each instance's mask probabilities).
  SSD and YOLO expect their fixed input size (the `cvpipe_fixed_size` metadata): `detect()` resizes in uint8
  with OpenCV before the graph, as it does before the PyTorch model, and scales the boxes back after it.
- classification: `images` float32 [N, 3, H, W] → `logits` [N, K].
- segmentation: `images` → `logits` [N, K, H, W] (argmax is the label mask).
- style transfer: `images` → `stylized` [N, 3, H, W] in [0, 1].
Normalisation is inside every graph. Metadata (`cvpipe_task`, `cvpipe_classes`, `cvpipe_fixed_size`,
`cvpipe_pipeline`, the checkpoint's thresholds) lets `--weights MODEL.onnx|MODEL.xml` run it without the checkpoint.
R-CNN and Fast R-CNN are not exportable: their selective-search proposals are computed outside any graph.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.errors import ConfigError
from cvpipe.tasks import get_task

OPSET = 17
GRAPH_VERSION = 3  # bump when onnx_bytes makes a different graph: runtime's cache of exports is keyed by it


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
    if name == "image":  # detectors: a batch of one image; a fixed-size one's shapes are constants, folded away
        axes = {} if model.fixed_size else {name: {2: "height", 3: "width"}}
    else:
        axes = {name: {0: "batch", 2: "height", 3: "width"}} | {out: {0: "batch"} for out in outputs}
    graph = task.export_graph(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes on shape arithmetic and Python control flow
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (x,), buffer, dynamo=False, opset_version=OPSET, input_names=[name],
                          output_names=outputs, dynamic_axes=axes)
    proto = onnx.load_from_string(folded(buffer.getvalue()))
    fixed = model.fixed_size
    for key, value in {"cvpipe_task": config.task, "cvpipe_classes": json.dumps(classes),
                       "cvpipe_fixed_size": json.dumps(list(fixed) if fixed else None),
                       "cvpipe_pipeline": config.name,
                       **{key: str(value) for key, value in (thresholds or {}).items()}}.items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def folded(graph: bytes) -> bytes:
    """`graph` with its constant subgraphs computed (ONNX Runtime's basic, hardware-independent offline
    optimisation: constant folding and redundant-node removal, standard operators only) and empty constants
    dropped from concatenations. What the tracer leaves as arithmetic on constants (a fixed-size detector's
    anchors, in float64) and torchvision's padding arithmetic (a Concat with an empty int64 constant) are what
    OpenCV's DNN module cannot run."""
    import tempfile

    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        proto = onnx.load(options.optimized_model_filepath)
    empty = {tensor.name for tensor in proto.graph.initializer if 0 in tensor.dims}
    for node in proto.graph.node:
        if node.op_type == "Concat" and empty & set(node.input):
            kept_inputs = [name for name in node.input if name not in empty]
            del node.input[:]
            node.input.extend(kept_inputs)
    unused = empty - {name for node in proto.graph.node for name in node.input}
    kept_tensors = [tensor for tensor in proto.graph.initializer if tensor.name not in unused]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept_tensors)
    used = {node.domain for node in proto.graph.node}  # ORT lists every domain it knows; keep the graph's own
    kept = [entry for entry in proto.opset_import if entry.domain in used | {""}]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    return proto.SerializeToString()


def max_difference(model: nn.Module, runtime, config: PipelineConfig) -> float:
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


def graph_metadata(graph: bytes) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load_from_string(graph).metadata_props}


def with_metadata(graph: bytes, entries: dict[str, str]) -> bytes:
    """`graph` with these metadata entries set (replacing same-named ones): quantizers may drop cvpipe's."""
    import onnx

    proto = onnx.load_from_string(graph)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()
