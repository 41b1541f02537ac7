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

from cvpipe.config import PipelineConfig
from cvpipe.data.records import Dataset
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
    from cvpipe.io.model_files import set_aside
    from cvpipe.io.outputs import prepare_file

    out = Path(out)
    check_request(out, fmt, precision)
    prepare_file(out, "--out")  # before the model loads: a bad --out fails in a second
    exporter = Exporter(config, weights, console or Console(quiet=True))
    report = exporter.write(out, fmt, precision, calibrate)
    report.rescore, report.unchecked = exporter.rescore(report.path)
    if report.rescore is not None and not report.rescore.passed and not force:
        report.path, report.rejected = set_aside(out), True
    return report


class Exporter:
    """One checkpoint's exports: its FP32 graph traced once, INT8 calibration inputs gathered once, the checkpoint
    scored on val once, however many formats and precisions are written (`cvpipe export`, `cvpipe benchmark`)."""

    def __init__(self, config: PipelineConfig, weights: Path | None, console: Console):
        from cvpipe.engine.checkpoint import load_trained
        from cvpipe.ops.threshold import carried_thresholds

        self.config, self.weights, self.console = config, weights, console
        self.model, self.classes = load_trained(config, weights, torch.device("cpu"))
        self.graph = onnx_bytes(self.model, config, self.classes, carried_thresholds(weights))
        self.samples: dict[str | None, tuple[list, str]] = {}  # calibration inputs per --calibrate source
        self.reference: float | None = None
        self.val: tuple[Dataset | None, str] | None = None

    @property
    def stat(self) -> str | None:
        return get_task(self.config.task).export_check

    def write(self, out: Path, fmt: str, precision: str, calibrate: str | Path | None = None) -> ExportReport:
        """The export written to `out` (atomically; an IR's .bin first) and checked against PyTorch on two inputs."""
        from cvpipe.engine.exported import load_exported
        from cvpipe.io.images import write_bytes
        from cvpipe.io.outputs import prepare_file

        check_request(out, fmt, precision)
        prepare_file(out, "--out")
        graph, calibration = self.graph, ""
        if precision == "int8":
            samples, calibration = self.calibration(calibrate)
            graph = quantize(fmt, graph, samples)
        graph = with_metadata(graph, {PRECISION_KEY: precision})  # OpenVINO computes in FP32 unless it says fp16
        if fmt == "openvino":
            write_openvino(graph, out, compress_to_fp16=precision == "fp16")
        else:
            write_bytes(out, graph)
        megabytes = sum(f.stat().st_size for f in exported_files(out)) / 2**20
        difference = max_difference(self.model, load_exported(out), self.config)
        return ExportReport(out, fmt, precision, megabytes, difference, calibration)

    def calibration(self, calibrate: str | Path | None) -> tuple[list, str]:
        """(INT8 calibration inputs, what they are)."""
        from cvpipe.engine.quantize import calibration_files, calibration_inputs

        key = str(calibrate) if calibrate is not None else None
        if key not in self.samples:
            files, source = calibration_files(self.config, self.classes, calibrate)
            samples = calibration_inputs(self.model, self.config, self.classes, files,
                                         self.config.export.calibration_images, self.console)
            self.console.print(f"INT8: calibrating on {len(samples)} graph inputs from {source}")
            self.samples[key] = samples, f"{len(samples)} graph inputs from {source}"
        return self.samples[key]

    def val_split(self) -> tuple[Dataset | None, str]:
        """(the val split, or None and why not): exporting never needs the dataset, re-scoring does."""
        from cvpipe.engine.data import load_split
        from cvpipe.errors import DataError

        if self.val is None:
            if get_task(self.config.task).export_check is None:
                self.val = None, f"{self.config.task} has no accuracy stat to re-score an export on"
            elif not self.config.data.val or not self.config.data.root:
                self.val = None, f"{self.config.name} has no val split"
            else:
                try:
                    self.val = load_split(self.config, "val", self.classes)[0], ""
                except DataError as e:
                    self.val = None, f"its val split cannot be read ({e})"
        return self.val

    def score(self, model) -> float:
        """The task's `export_check` stat of `model` (PyTorch or an exported runner) on the val split, plain: one
        view, as exports run."""
        from cvpipe.engine.evaluate import evaluate

        dataset, _ = self.val_split()
        config = self.config
        plain = config.plain()
        return evaluate(model, plain, dataset, torch.device("cpu")).stats[self.stat]

    def rescore(self, path: Path) -> tuple[Rescore | None, str]:
        """(the export at `path` against the checkpoint on the val split, or None and why not)."""
        from cvpipe.engine.exported import load_exported

        dataset, why = self.val_split()
        if dataset is None:
            return None, why
        self.console.print(f"scoring {path.name} on the val split ...")
        return Rescore(self.stat, self.checkpoint_score(), self.score(load_exported(path)),
                       self.config.export.tolerance), ""

    def checkpoint_score(self) -> float:
        if self.reference is None:
            dataset, _ = self.val_split()
            self.console.print(f"scoring the checkpoint on the val split ({len(dataset.records)} images) ...")
            self.reference = self.score(self.model)
        return self.reference


def quantize(fmt: str, graph: bytes, samples: list) -> bytes:
    from cvpipe.engine.quantize import quantize_nncf, quantize_onnxruntime

    return (quantize_nncf if fmt == "openvino" else quantize_onnxruntime)(graph, samples)


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
