"""`cvpipe benchmark`: each backend and precision that runs here (PyTorch eager; ONNX Runtime FP32 and INT8;
OpenVINO FP32, FP16 and INT8), measured on the same image files end to end (decode, the eval transform, slicing,
the model, post-processing), each scored on the val split against the checkpoint. An export that loses more than
`export.tolerance` is reported and never chosen; the fastest within it is marked and remembered beside the
checkpoint (`best.auto.json`), where `--backend auto` takes it (engine/runtime.py).

Ultralytics' `yolo benchmark` measures each format too; this one also refuses the ones that lose accuracy.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from rich.console import Console

from cvpipe.config import PipelineConfig
from cvpipe.errors import ConfigError, DataError

# (backend, format, precision), in the table's order; PyTorch first: the baseline of every ratio
CANDIDATES = [("pytorch", None, "fp32"), ("onnxruntime", "onnx", "fp32"), ("onnxruntime", "onnx", "int8"),
              ("openvino", "openvino", "fp32"), ("openvino", "openvino", "fp16"), ("openvino", "openvino", "int8")]


@dataclass
class Row:
    backend: str
    precision: str
    file: str | None = None  # the export measured (None: the checkpoint, eager)
    megabytes: float | None = None
    score: float | None = None  # the task's export_check stat on val, plain
    loss: float | None = None  # the checkpoint's score minus this one
    verified: bool | None = None  # within export.tolerance (None: not scored)
    images_per_second: float = 0.0
    ms_median: float = 0.0
    ms_p95: float = 0.0
    peak_mb: float | None = None  # resident memory the model added, at its peak while running
    speedup: float = 0.0  # images_per_second ÷ PyTorch eager's
    error: str = ""  # why this one could not be measured here

    @property
    def name(self) -> str:
        return f"{self.backend} {self.precision}"


def benchmark(config: PipelineConfig, weights: Path | None, source: str | Path | None, out: Path, *,
              images: int, calibrate: str | Path | None = None, console: Console) -> tuple[list[Row], Row | None]:
    """Every candidate measured; (the rows, the fastest verified one, or None where nothing exported is
    verified). The exports are written under `out`, the table as `out`/benchmark.json. INT8 calibrates on
    `calibrate`, else the training split, else (a ready model) the `source` images."""
    from cvpipe.engine.export import Exporter, default_out
    from cvpipe.engine.exported import load_exported
    from cvpipe.engine.runtime import remember_backend
    from cvpipe.io.images import write_text

    exporter = Exporter(config, weights, console)
    files = bench_files(exporter, source)[:images]
    if calibrate is None and not config.data.train and source is not None:
        calibrate = source  # a ready model without a training split: INT8 calibrates on the images it is timed on
    dataset, why = exporter.val_split()
    if dataset is None:
        console.print(f"not scored: {why}; every export is measured but none is verified, so `--backend auto` "
                      "keeps PyTorch")
    rows = []
    for backend, fmt, precision in CANDIDATES:
        row = Row(backend, precision)
        rows.append(row)
        try:
            if fmt is None:
                load = partial(eager, config, weights)
            else:
                path = default_out(None, out / (weights.stem if weights else config.name), fmt, precision)
                report = exporter.write(path, fmt, precision, calibrate)
                row.file, row.megabytes = str(path), report.megabytes
                load = partial(load_exported, path)
            measure(row, load, exporter, files, config)
        except (ConfigError, RuntimeError, ValueError) as e:  # a runtime or quantizer that fails on this model
            row.error = f"{type(e).__name__}: {str(e)[:160]}"
            console.print(f"{row.name}: not measured ({row.error})")
            continue
        if dataset is not None:
            row.score = exporter.checkpoint_score() if fmt is None else exporter.score(load())
            row.loss = exporter.checkpoint_score() - row.score
            row.verified = row.loss <= config.export.tolerance + 1e-9
        console.print(f"{row.name}: {row.images_per_second:.2f} img/s"
                      + (f", {exporter.stat} {row.score:.4f}" if row.score is not None else ""))
    base = rows[0].images_per_second
    for row in rows:
        row.speedup = row.images_per_second / base if base and row.images_per_second else 0.0
    verified = [row for row in rows[1:] if row.verified and not row.error]
    best = max(verified, key=lambda row: row.images_per_second, default=None)
    if best is not None and best.images_per_second <= base:
        best = None  # nothing exported beats eager
    write_text(out / "benchmark.json", json.dumps({
        "pipeline": config.name, "weights": str(weights) if weights else config.model.weights,
        "files": len(files), "stat": exporter.stat, "tolerance": config.export.tolerance,
        "threads": torch.get_num_threads(), "rows": [asdict(row) for row in rows],
        "fastest_verified": best.name if best else None}, indent=1))
    remember_backend(config, weights, best and {"backend": best.backend, "precision": best.precision,
                                                "file": str(Path(best.file).resolve()), "speedup": best.speedup,
                                                "stat": exporter.stat, "loss": best.loss})
    return rows, best


def eager(config: PipelineConfig, weights: Path | None):
    from cvpipe.engine.runtime import inference_model

    return inference_model(config, weights, torch.device("cpu"), "pytorch").model


def bench_files(exporter, source: str | Path | None) -> list[Path]:
    """The images to time: `source`, else the val split's."""
    from cvpipe.io.images import discover

    if source is not None:
        return discover(source)[0]
    dataset, why = exporter.val_split()
    if dataset is None:
        raise ConfigError(f"benchmark: {why}; name images to time with --source FOLDER (or a file or glob)")
    return [record.path for record in dataset.records]


def measure(row: Row, load: Callable, exporter, files: list[Path], config: PipelineConfig) -> None:
    """Seconds per file end to end as `cvpipe predict` runs them on this machine (decode and transform on a thread
    one file ahead, the task's prediction path), after the first file once as a warm-up; the resident memory the
    model adds."""
    from cvpipe.data.augment import build_augment
    from cvpipe.engine.predict import ImageFiles
    from cvpipe.io.prefetch import Prefetch
    from cvpipe.tasks import get_task
    from cvpipe.tasks.base import PredictJob

    task = get_task(config.task)
    plain = config.plain()
    images = ImageFiles(files, build_augment(config.augment, "eval") if task.eval_transform else None)

    def decoded(indices):
        for i in indices:
            _, tensor, error = images[i]
            if error is not None:
                raise DataError(f"{files[i]}: {error}")
            yield files[i], tensor

    with PeakMemory() as memory:
        model = load()
        job = PredictJob(plain, torch.device("cpu"), exporter.classes, Path(os.devnull), 0.0 if task.thresholded
                         else None, save_images=False, submit=lambda *args: None)
        for path, tensor in decoded([0]):
            task.predict(model, [tensor], [path.name], job)
        seconds = []
        with Prefetch(decoded(range(len(files))), depth=1) as ahead:
            start = time.perf_counter()
            for path, tensor in ahead:
                task.predict(model, [tensor], [path.name], job)
                job.futures.clear()
                seconds.append(time.perf_counter() - start)
                start = time.perf_counter()
    row.images_per_second = len(seconds) / sum(seconds)
    row.ms_median = statistics.median(seconds) * 1000
    row.ms_p95 = sorted(seconds)[min(len(seconds) - 1, round(0.95 * (len(seconds) - 1)))] * 1000
    row.peak_mb = memory.peak_mb


class PeakMemory:
    """The largest resident set size above the one at entry, sampled every 10 ms from /proc (Linux; elsewhere
    `peak_mb` stays None). Resident memory is what a deployment pays for; Python's allocators do not see the
    runtimes' own. Approximate within one process: memory an earlier row kept in its allocator's pools is
    reused without showing."""

    STATM = Path("/proc/self/statm")

    def __init__(self):
        self.peak_mb: float | None = None
        self.stop = threading.Event()

    def rss(self) -> int:
        return int(self.STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if not self.STATM.exists():
            return self
        gc.collect()  # what earlier rows freed goes back to the system first, so this row's growth shows
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.start, self.top = self.rss(), 0
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self) -> None:
        while not self.stop.wait(0.01):
            self.top = max(self.top, self.rss())

    def __exit__(self, *exc) -> None:
        if self.STATM.exists():
            self.stop.set()
            self.thread.join()
            self.peak_mb = max(0, max(self.top, self.rss()) - self.start) / 2**20
