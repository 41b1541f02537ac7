"""`cvpipe export`: a trained pipeline's model in ONNX (ONNX Runtime) or OpenVINO IR, at FP32, FP16 (OpenVINO) or
INT8 (engine/quantize.py), checked and scored on the val split before it is kept. The graph itself, with
post-processing and cvpipe's metadata, is engine/onnx_graph.py's.

Every export is re-scored: the checkpoint and the export go through the same plain evaluation of the val split
(the task's `export_check` stat: AP50, mask AP50, mIoU, top-1), and an export that loses more than
`export.tolerance` is renamed `NAME.rejected.SUFFIX` unless forced, so nothing downstream picks it up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.engine.onnx_graph import max_difference, onnx_bytes, with_metadata
from cvpipe.errors import ConfigError
from cvpipe.io.model_files import PRECISION_KEY, exported_files
from cvpipe.tasks import get_task

FORMATS = {"onnx": ".onnx", "openvino": ".xml"}  # --format → the file's suffix
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class Rescore:
    """The export against its checkpoint on the val split, plain (one view: what exports run)."""

    stat: str
    reference: float  # PyTorch's
    exported: float
    tolerance: float

    @property
    def loss(self) -> float:
        return self.reference - self.exported

    @property
    def passed(self) -> bool:
        return self.loss <= self.tolerance + 1e-9


@dataclass
class ExportReport:
    path: Path  # where the export is: its `.rejected` name when refused
    format: str
    precision: str
    megabytes: float
    max_abs_difference: float  # the runtime vs PyTorch on two test inputs (see max_difference)
    calibration: str = ""  # INT8: what the activation ranges were measured on
    rescore: Rescore | None = None
    unchecked: str = ""  # why there is no rescore
    rejected: bool = False


def default_out(weights: Path | None, fallback: Path, fmt: str, precision: str) -> Path:
    """best.pt → best.onnx, best.int8.onnx, best.xml, best.fp16.xml ... beside the checkpoint."""
    stem = weights.with_suffix("") if weights is not None else fallback
    tag = "" if precision == "fp32" else f".{precision}"
    return stem.with_name(stem.name + tag + FORMATS[fmt])


def check_request(out: Path, fmt: str, precision: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if fmt == "onnx" and precision == "fp16":
        raise ConfigError("--format onnx --precision fp16: ONNX Runtime's CPU provider has no FP16 kernels for most "
                          "layers, so the graph would run slower than FP32; use --format openvino --precision fp16, or "
                          "--precision int8 for speed on a CPU")
    if out.suffix != FORMATS[fmt]:
        raise ConfigError(f"--out {out}: --format {fmt} writes a {FORMATS[fmt]} file; name it so")


def export(config: PipelineConfig, weights: Path | None, out: Path, *, fmt: str = "onnx", precision: str = "fp32",
           calibrate: str | Path | None = None, force: bool = False, console: Console | None = None) -> ExportReport:
    """Write the export atomically, check the runtime against PyTorch on two inputs, score it on the val split
    against the checkpoint, and set it aside under its `.rejected` name when it loses more than
    `export.tolerance` (unless `force`)."""
    from cvpipe.engine.checkpoint import load_trained
    from cvpipe.engine.exported import load_exported
    from cvpipe.io.images import write_bytes
    from cvpipe.io.model_files import set_aside
    from cvpipe.io.outputs import prepare_file
    from cvpipe.ops.threshold import carried_thresholds

    console = console or Console(quiet=True)
    out = Path(out)
    check_request(out, fmt, precision)
    prepare_file(out, "--out")
    model, classes = load_trained(config, weights, torch.device("cpu"))
    graph = onnx_bytes(model, config, classes, carried_thresholds(weights))
    calibration = ""
    if precision == "int8":
        graph, calibration = quantized(graph, model, config, classes, fmt, calibrate, console)
    graph = with_metadata(graph, {PRECISION_KEY: precision})  # OpenVINO computes in FP32 unless it says fp16
    if fmt == "openvino":
        write_openvino(graph, out, compress_to_fp16=precision == "fp16")
    else:
        write_bytes(out, graph)
    runtime = load_exported(out)
    report = ExportReport(out, fmt, precision, sum(f.stat().st_size for f in exported_files(out)) / 2**20,
                          max_difference(model, runtime, config), calibration)
    report.rescore, report.unchecked = rescore(model, runtime, config, classes, console)
    if report.rescore is not None and not report.rescore.passed and not force:
        report.path, report.rejected = set_aside(out), True
    return report


def quantized(graph: bytes, model: nn.Module, config: PipelineConfig, classes: list[str], fmt: str,
              calibrate: str | Path | None, console: Console) -> tuple[bytes, str]:
    """(the INT8 graph, what it was calibrated on)."""
    from cvpipe.engine.quantize import (
        calibration_files,
        calibration_inputs,
        quantize_nncf,
        quantize_onnxruntime,
    )

    files, source = calibration_files(config, classes, calibrate)
    samples = calibration_inputs(model, config, classes, files, config.export.calibration_images, console)
    console.print(f"INT8: calibrating on {len(samples)} graph inputs from {source} ...")
    graph = (quantize_nncf if fmt == "openvino" else quantize_onnxruntime)(graph, samples)
    return graph, f"{len(samples)} graph inputs from {source}"


def write_openvino(graph: bytes, out: Path, *, compress_to_fp16: bool) -> None:
    """The ONNX graph converted to an OpenVINO IR (out .xml + .bin) with cvpipe's metadata in its runtime info;
    written in a temporary folder beside `out` and moved into place, the weights first."""
    import tempfile

    import openvino

    from cvpipe.io.model_files import openvino_core, openvino_metadata

    model = openvino_core().read_model(graph)
    for key, value in openvino_metadata(model).items():  # the ONNX metadata OpenVINO keeps, under its own name
        model.set_rt_info(value, ["cvpipe", key])
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.") as tmp:
        staged = Path(tmp) / out.name
        openvino.save_model(model, str(staged), compress_to_fp16=compress_to_fp16)
        os.replace(staged.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(staged, out)


def rescore(model: nn.Module, runtime, config: PipelineConfig, classes: list[str],
            console: Console) -> tuple[Rescore | None, str]:
    """(the export and the checkpoint scored plain on the val split, or None and why not)."""
    from cvpipe.engine.data import load_split
    from cvpipe.engine.evaluate import evaluate
    from cvpipe.errors import DataError

    stat = get_task(config.task).export_check
    if stat is None:
        return None, f"{config.task} has no accuracy stat to re-score an export on"
    if not config.data.val or not config.data.root:
        return None, f"{config.name} has no val split"
    try:
        dataset, _ = load_split(config, "val", classes)
    except DataError as e:  # export never needs the dataset: unverified, and said so
        return None, f"its val split cannot be read ({e})"
    plain = config.model_copy(update={"tta": config.tta.model_copy(update={"enabled": False})})
    cpu = torch.device("cpu")
    console.print(f"re-scoring on the val split ({len(dataset.records)} images): the checkpoint, then the export")
    reference = evaluate(model, plain, dataset, cpu).stats[stat]
    exported = evaluate(runtime, plain, dataset, cpu).stats[stat]
    return Rescore(stat, reference, exported, config.export.tolerance), ""
