"""Inference backends and the graph work done before any of them runs.

- `pytorch`: eager, with every BatchNorm folded into its convolution (models/fusion.py) and channels-last.
- `compile`: torch.compile of a fixed-size detector's folded core (inductor, frozen weights); its kernels are
  cached in inductor's cache directory, under cvpipe's cache (cvpipe/__init__.py), so a later run compiles for
  ~10 s rather than the first run's 20–50 s.
- `onnxruntime`: the whole model as one ONNX graph (engine/onnx_graph.py), the graph cached by checkpoint.
- `openvino`: the same ONNX graph read and compiled by OpenVINO for the CPU.
An exported file as `--weights` (.onnx, .xml from `cvpipe export`) runs on its own runtime.
- `auto` (the default): on the CPU, the export `cvpipe benchmark` measured fastest and verified on val for this
  checkpoint (engine/benchmark.py, remembered in best.auto.json); else the backend the head declares fastest on
  this kind of device (`HeadSpec.auto_backend`, from benches/inference_speed.py), taken only where its outputs
  match eager's on the export checks' two inputs within EXPORT_TOLERANCE; else eager. The choice and why are
  printed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from cvpipe.config import BACKENDS, PipelineConfig
from cvpipe.errors import ConfigError

EXPORTED_BACKENDS = ("onnxruntime", "openvino")  # the runtimes of exported files (engine/exported.py): CPU here
EXPORT_TOLERANCE = 1e-3  # largest |backend − eager| accepted (scores, box pixels, mask probabilities), as export checks


class Inference(NamedTuple):
    model: Any  # an nn.Module, or an engine.exported runner: called alike by detect / classify / segment
    classes: list[str]
    backend: str  # what runs: pytorch | compile | onnxruntime | openvino
    why: str  # how it was chosen, for the console


def inference_model(config: PipelineConfig, weights: Path | None, device: torch.device,
                    backend: str = "auto") -> Inference:
    """A checkpoint (or the pipeline's ready weights) ready for `detect` / `classify` / `segment` on `backend`, or
    an exported file (.onnx: ONNX Runtime, or OpenVINO with `--backend openvino`; .xml: OpenVINO)."""
    from cvpipe.engine.checkpoint import load_trained
    from cvpipe.io.model_files import EXPORTED

    if backend not in BACKENDS:
        raise ConfigError(f"--backend: expected one of {' | '.join(BACKENDS)}, got {backend!r}")
    if backend in EXPORTED_BACKENDS and device.type != "cpu":
        raise ConfigError(f"--backend {backend} runs on the CPU here; on {device} use pytorch or compile "
                          "(or --set train.device=cpu)")
    if weights is not None and Path(weights).suffix in EXPORTED:
        model = exported_model(config, Path(weights), None if backend == "auto" else backend)
        return Inference(model, model.classes, model.runtime, f"an exported {Path(weights).suffix} file")
    if backend == "auto" and not multi_scale(config):
        chosen = remembered_backend(config, weights, device)
        if chosen is not None:
            return chosen
    model, classes = load_trained(config, weights, device)
    if backend == "auto":
        return _auto(model, classes, config, weights, device)
    return Inference(_on_backend(backend, model, classes, config, weights), classes, backend, "--backend")


def exported_model(config: PipelineConfig, path: Path, backend: str | None = None):
    """An exported file's runner (engine/exported.py; `backend`: another runtime that reads it, else its own),
    checked to be made for this pipeline's task and classes."""
    from cvpipe.engine.checkpoint import check_classes
    from cvpipe.engine.exported import load_exported
    from cvpipe.tasks import check_made_for

    model = load_exported(path, backend)
    check_made_for(f"--weights {path}", model.task, config.task)
    if config.data.classes:
        check_classes(path, model.classes, config.data.classes)
    return model


def _on_backend(backend: str, model: nn.Module, classes: list[str], config: PipelineConfig, weights: Path | None,
                *, keep: bool = False):
    """The model on `backend`; with `keep`, `model` itself is left as it was (auto's reference)."""
    from cvpipe.engine.exported import OnnxModel, OpenVinoModel

    if backend == "onnxruntime":
        return OnnxModel(_cached_onnx(model, classes, config, weights))
    if backend == "openvino":  # OpenVINO reads the ONNX graph itself: the same cached export serves both
        return OpenVinoModel(_cached_onnx(model, classes, config, weights))
    if keep:
        model = copy.deepcopy(model)
    fold_batchnorm(model, config)
    if backend == "compile":
        compile_core(model, config.model.head.name)
    return model


def _auto(model: nn.Module, classes: list[str], config: PipelineConfig, weights: Path | None,
          device: torch.device) -> Inference:
    from cvpipe.engine.onnx_graph import max_difference
    from cvpipe.models.heads.registry import head_spec

    head = config.model.head.name
    choice = head_spec(head).auto_backend.get(device.type, "pytorch")
    if choice != "pytorch" and multi_scale(config):
        choice, why = "pytorch", "auto: PyTorch, the only backend that runs tta.scales other than 1"
    else:
        why = f"auto: the fastest for {head} on {device.type}"
    if choice != "pytorch":
        try:
            candidate = _on_backend(choice, model, classes, config, weights, keep=True)
            difference = max_difference(model, candidate, config)
        except Exception as e:  # an export or compile this model does not survive: auto still runs, on eager
            why = f"auto: PyTorch, as {choice} failed on this model ({type(e).__name__}: {str(e)[:120]})"
        else:
            if difference <= EXPORT_TOLERANCE:
                return Inference(candidate, classes, choice, f"{why}; checked: same outputs as PyTorch")
            why = f"auto: PyTorch, as {choice} gave other outputs on this model (by {difference:.2g})"
    return Inference(_on_backend("pytorch", model, classes, config, weights), classes, "pytorch", why)


def multi_scale(config: PipelineConfig) -> bool:
    """Test-time views at other input scales: only PyTorch changes a model's input size."""
    return config.tta.enabled and any(scale != 1.0 for scale in config.tta.scales)


def backend_record(config: PipelineConfig, weights: Path | None) -> Path:
    """Where `cvpipe benchmark` remembers the fastest verified export: best.pt → best.auto.json beside it (for a
    ready model without a checkpoint, <output.dir>/<name>/auto.json)."""
    if weights is not None:
        return Path(weights).with_suffix(".auto.json")
    return Path(config.output.dir) / config.name / "auto.json"


def _checkpoint_identity(weights: Path | None) -> dict | None:
    if weights is None:
        return None
    stat = Path(weights).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def remember_backend(config: PipelineConfig, weights: Path | None, choice: dict | None) -> None:
    """Record (or, with None, forget) the export `--backend auto` takes on the CPU for this checkpoint."""
    from cvpipe.io.images import write_text

    record = backend_record(config, weights)
    if choice is None:
        record.unlink(missing_ok=True)
        return
    write_text(record, json.dumps({"device": "cpu", "threads": torch.get_num_threads(),
                                   "checkpoint": _checkpoint_identity(weights), **choice}, indent=1))


def remembered_backend(config: PipelineConfig, weights: Path | None, device: torch.device) -> Inference | None:
    """The export `cvpipe benchmark` found fastest and within `export.tolerance` on val for this checkpoint, where
    it still applies: the same checkpoint file (size and time), the CPU, the export still there and loadable."""
    record = backend_record(config, weights)
    if device.type != "cpu" or not record.is_file():
        return None
    try:
        chosen = json.loads(record.read_text())
        fresh = chosen["checkpoint"] == _checkpoint_identity(weights) and chosen["loss"] <= config.export.tolerance
        path = Path(chosen["file"])
        if not fresh or not path.is_file():
            return None
        model = exported_model(config, path, chosen["backend"])
    except (OSError, ValueError, KeyError, TypeError, ConfigError):  # a stale or damaged record: chosen again
        return None
    why = (f"auto: {chosen['backend']} {chosen['precision']} ({path.name}), the fastest export `cvpipe benchmark` "
           f"verified for this checkpoint: {chosen['speedup']:.1f}× PyTorch, {chosen['stat']} "
           f"{-chosen['loss'] * 100:+.1f} points on val")
    return Inference(model, model.classes, chosen["backend"], why)


def fold_batchnorm(model: nn.Module, config: PipelineConfig) -> int:
    """Fold BatchNorm into the convolutions (in place), found on one run of the task's export example; heads whose
    forward needs proposals computed outside it (R-CNN, Fast R-CNN) are left as they are. Returns how many."""
    from cvpipe.models.fusion import fuse_conv_bn
    from cvpipe.models.heads.registry import head_spec
    from cvpipe.tasks import get_task

    if not head_spec(config.model.head.name).exportable:
        return 0
    task = get_task(config.task)
    device = next(model.parameters()).device
    x = task.example_input(config, model).to(device)
    return fuse_conv_bn(model.eval(), lambda: task.export_graph(model)(x))


def _cached_onnx(model: nn.Module, classes: list[str], config: PipelineConfig, weights: Path | None) -> bytes:
    """The model's ONNX graph, exported once per (weights file, model section, classes, torch version, graph
    version) and kept in cvpipe's cache (an export takes seconds: a Faster R-CNN's, tens of seconds)."""
    from cvpipe.engine.onnx_graph import GRAPH_VERSION, OPSET, onnx_bytes
    from cvpipe.io.images import write_bytes, write_text
    from cvpipe.paths import cache_dir

    key = hashlib.sha256()
    if weights is not None:
        stat = Path(weights).stat()
        key.update(f"{Path(weights).resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    key.update(json.dumps([config.model.model_dump(mode="json"), classes, torch.__version__, OPSET, GRAPH_VERSION],
                          sort_keys=True).encode())
    path = cache_dir() / "onnx" / f"{key.hexdigest()[:24]}.onnx"
    digest = path.with_suffix(".sha256")  # written after the graph: an entry is used only when the two agree
    try:
        if path.is_file() and digest.is_file() and digest.read_text().strip() == hashlib.sha256(
                graph := path.read_bytes()).hexdigest():
            return graph
    except OSError:  # unreadable: rebuilt below
        pass
    graph = onnx_bytes(model, config, classes)  # a missing, half-written or garbage entry is made again
    try:
        write_bytes(path, graph)
        write_text(digest, hashlib.sha256(graph).hexdigest() + "\n")
    except OSError:  # a read-only cache costs the export next time, nothing more
        pass
    return graph


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
    with torch.inference_mode():  # one eager pass fills the core's own caches (YOLO's cell centres), so the
        core(torch.zeros(1, 3, *model.fixed_size, device=next(core.parameters()).device))  # compile sees them full
    plug(CompiledCore(core))


class CompiledCore:
    """`torch.compile` (inductor) with weight freezing, channels-last, of a core whose BatchNorms are already
    folded. Freezing pre-packs the weights: most of compile's gain on CPU for SSD (the config patch around each
    call gives it and leaves the process's other compiles alone). A frozen graph is not kept whole in inductor's
    cache, but its compiled kernels are: the first run compiles for ~20–50 s, later runs for ~10 s."""

    def __init__(self, module: nn.Module):
        from torch._inductor import config as inductor_config

        self.patch = inductor_config.patch
        self.compiled = torch.compile(module.to(memory_format=torch.channels_last))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.patch(freezing=True):
            return self.compiled(x.contiguous(memory_format=torch.channels_last))
