"""The Python API: `Pipeline.from_yaml(path).fit()`, `.evaluate()`, `.predict(source)` — what the CLI calls."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from cvpipe.config import PipelineConfig
from cvpipe.console import make_console
from cvpipe.engine.export import ExportReport
from cvpipe.engine.fit import FitResult
from cvpipe.engine.predict import PredictReport
from cvpipe.engine.video import VideoReport
from cvpipe.errors import CvpipeError
from cvpipe.loading import load_pipeline, require_data
from cvpipe.metrics.classification import ClassificationMetrics
from cvpipe.metrics.coco import CocoMetrics


class Pipeline:
    def __init__(self, config: PipelineConfig, *, console: Console | None = None):
        self.config = config
        self.console = console or make_console()
        self.last_fit: FitResult | None = None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None, **kwargs) -> Pipeline:
        return cls(load_pipeline(path, overrides), **kwargs)

    def _weights(self, weights: str | Path | None) -> Path | None:
        """An explicit checkpoint, else this session's or the latest run's; None = the pipeline's `model.weights`."""
        from cvpipe.engine.runs import default_weights

        if weights is not None:
            return Path(weights)
        if self.last_fit is not None:
            return self.last_fit.best if self.last_fit.best.exists() else self.last_fit.last
        return default_weights(self.config)

    def _output_dir(self, weights: Path | None) -> Path:
        """Beside the checkpoint; for an untrained ready model, <output.dir>/<name>."""
        return weights.parent if weights is not None else Path(self.config.output.dir) / self.config.name

    def fit(self, *, resume: bool | str | Path = False, tensorboard: bool = True, callbacks=()) -> FitResult:
        """Train; `resume=True` continues the latest run of this pipeline from its last.pt. `callbacks`
        (engine.callbacks.Callback) run after the pipeline's own."""
        from cvpipe.engine.fit import fit

        require_data(self.config)
        self.last_fit = fit(self.config, resume=resume, console=self.console, tensorboard=tensorboard,
                            callbacks=callbacks)
        return self.last_fit

    def evaluate(self, weights: str | Path | None = None, *, json_path: str | Path | None = None,
                 report: str | Path | bool | None = None) -> CocoMetrics | ClassificationMetrics:
        """The task's metrics on the val split, detection with the pipeline's `tta:` views where enabled.
        With `json_path`, the metrics go there and, beside them, detection's `val_detections.json` /
        `val_annotations.json` (re-checkable with pycocotools alone) or classification's `val_predictions.csv`,
        and the task's plots.
        With `report` (a path, or True: report.html beside the JSON, else beside the weights), one HTML page of
        the metrics, plots and worst val images (viz/report.py). Without them nothing is written."""
        from cvpipe.engine.evaluate import run_evaluation

        require_data(self.config)
        weights = self._weights(weights)
        if report is True:
            report = (Path(json_path).parent if json_path else self._output_dir(weights)) / "report.html"
        return run_evaluation(self.config, weights, json_path=Path(json_path) if json_path else None,
                              report=Path(report) if report else None, console=self.console)

    def predict(self, source: str | Path, out: str | Path | None = None, *, weights: str | Path | None = None,
                conf: float | str | None = None, resume: bool = False, save_images: bool | None = None,
                backend: str = "auto", shard: tuple[int, int] | None = None, engine: str = "local",
                address: str | None = None, actors: int | None = None) -> PredictReport:
        """Detections for every image under `source` (folder, file or glob), written to `out`. `engine="ray"`
        runs it on a Ray cluster (`address`, `actors`: engine/predict_ray.py) with the same results."""
        from cvpipe.engine.predict import predict

        weights = self._weights(weights)
        out = Path(out) if out else self._output_dir(weights) / "predict"
        if engine == "ray":
            from cvpipe.engine.predict_ray import predict_on_ray

            if shard is not None:
                raise CvpipeError("--shard is for --engine local; Ray shares the images out itself")
            return predict_on_ray(self.config, source, out, weights, conf=conf, resume=resume,
                                  save_images=save_images, backend=backend, address=address, actors=actors,
                                  console=self.console)
        if address is not None or actors is not None:
            raise CvpipeError("--address and --actors are for --engine ray")
        return predict(self.config, source, out, weights, conf=conf, resume=resume, save_images=save_images,
                       backend=backend, shard=shard, console=self.console)

    def export(self, out: str | Path | None = None, *, weights: str | Path | None = None, fmt: str = "onnx",
               precision: str = "fp32", calibrate: str | Path | None = None, force: bool = False) -> ExportReport:
        """The model as one graph in `fmt` (onnx | openvino) at `precision` (fp32 | fp16 | int8, calibrated on the
        training split or on `calibrate`), beside its checkpoint unless `out` is given, re-scored on the val split
        and set aside as `.rejected` when it loses more than `export.tolerance` (unless `force`): engine/export.py."""
        from cvpipe.engine.export import default_out, export

        weights = self._weights(weights)
        out = Path(out) if out else default_out(weights, self._output_dir(None) / self.config.name, fmt, precision)
        return export(self.config, weights, out, fmt=fmt, precision=precision, calibrate=calibrate, force=force,
                      console=self.console)

    def benchmark(self, source: str | Path | None = None, out: str | Path | None = None, *,
                  weights: str | Path | None = None, images: int = 50, calibrate: str | Path | None = None):
        """Each backend and precision measured on `source` (default: the val split's images, at most `images`),
        scored on val; the exports and benchmark.json go to `out` (default: benchmark/ beside the checkpoint).
        Returns (rows, the fastest verified row or None): engine/benchmark.py."""
        from cvpipe.engine.benchmark import benchmark

        weights = self._weights(weights)
        out = Path(out) if out else self._output_dir(weights) / "benchmark"
        return benchmark(self.config, weights, source, out, images=images, calibrate=calibrate, console=self.console)

    def prelabel(self, source: str | Path, out: str | Path | None = None, *, weights: str | Path | None = None,
                 formats: tuple[str, ...] = (), conf: float | str | None = None, resume: bool = False,
                 image_url: str | None = None):
        """Pre-labels for the images under `source` in each of `formats` (default: Label Studio and CVAT), in `out`
        (default: label/ beside the checkpoint): labeling/prelabel.py."""
        from cvpipe.labeling.label_studio import LOCAL_FILES
        from cvpipe.labeling.prelabel import TOOLS, export_prelabels, require_labels

        require_labels(self.config)  # before looking for a checkpoint a segmentation pipeline may not have
        weights = self._weights(weights)
        out = Path(out) if out else self._output_dir(weights) / "label"
        return export_prelabels(self.config, source, out, weights, formats=formats or TOOLS, conf=conf, resume=resume,
                                image_url=image_url or LOCAL_FILES, console=self.console)

    def select(self, source: str | Path, out: str | Path | None = None, *, budget: int,
               weights: str | Path | None = None, conf: float | str | None = None):
        """The `budget` images (or windows) of the pool under `source` to label next, with their pre-labels, in
        `out` (default: select/ beside the checkpoint): labeling/select.py."""
        from cvpipe.labeling.prelabel import require_labels
        from cvpipe.labeling.select import select

        require_labels(self.config)
        weights = self._weights(weights)
        out = Path(out) if out else self._output_dir(weights) / "select"
        return select(self.config, source, out, weights, budget=budget, conf=conf, console=self.console)

    def audit(self, out: str | Path | None = None, *, weights: str | Path | None = None, split: str = "train",
              conf: float | str | None = None, folds: int = 0, resume: bool = False):
        """The labels of `split` most likely to be wrong, ranked against the model's predictions (with `folds`,
        K models trained without the labels each audits, instead of the checkpoint); audit.csv and audit.html in
        `out` (default: audit-SPLIT/ beside the checkpoint, or <output.dir>/<name>-audit-folds): labeling/audit.py."""
        from cvpipe.labeling.audit import audit
        from cvpipe.labeling.prelabel import require_labels

        require_labels(self.config)
        require_data(self.config)
        if folds:
            out = Path(out) if out else Path(self.config.output.dir) / f"{self.config.name}-audit-folds"
            return audit(self.config, None, out, split=split, conf=conf, folds=folds, resume=resume,
                         console=self.console)
        weights = self._weights(weights)
        out = Path(out) if out else self._output_dir(weights) / f"audit-{split}"
        return audit(self.config, weights, out, split=split, conf=conf, resume=resume, console=self.console)

    def import_labels(self, file: str | Path, images: str | Path, out: str | Path, *, fmt: str | None = None,
                      split: str = "train", predictions: bool = False):
        """A labeling tool's corrected annotations (Label Studio JSON, CVAT XML) of the images under `images`, as a
        new dataset folder `out`, checked: labeling/importing.py."""
        from cvpipe.labeling.importing import import_labels

        return import_labels(self.config, Path(file), Path(images), Path(out), fmt=fmt, split=split,
                             predictions=predictions)

    def video(self, source: str | int | list[str], out: str | Path | None = None, *, weights: str | Path | None = None,
              jsonl: str | Path | None = None, show: bool = False, serve: str | None = None, stride: int = 1,
              conf: float | str | None = None, backend: str = "auto", max_frames: int | None = None,
              duration: float | None = None, folder_fps: float | None = None) -> VideoReport | list[VideoReport]:
        """The pipeline over a video file, image folder, webcam or stream, or a list of them run together; an
        annotated MP4, JSON lines and a summary per source. One source: `out` is its MP4 (default
        <run>/video/<source>.mp4) and one report comes back. A list: `out` is a folder (default <run>/video/),
        each source's files are named after it, and the reports come back in order. The options are
        `engine.video.VideoOptions`."""
        from cvpipe.engine.video import VideoOptions, run_video, stream_stem, unique_stems

        options = VideoOptions(jsonl=Path(jsonl) if jsonl else None, show=show, serve=serve, stride=stride, conf=conf,
                               backend=backend, max_frames=max_frames, duration=duration, folder_fps=folder_fps)

        weights = self._weights(weights)
        sources = [str(s) for s in source] if isinstance(source, (list, tuple)) else [str(source)]
        if isinstance(source, (list, tuple)):
            folder = Path(out) if out else self._output_dir(weights) / "video"
            outs = [folder / f"{stem}.mp4" for stem in unique_stems(sources)]
        else:
            outs = [Path(out) if out else self._output_dir(weights) / "video" / f"{stream_stem(sources[0])}.mp4"]
        reports = run_video(self.config, sources, weights, outs=outs, options=options, console=self.console)
        return reports if isinstance(source, (list, tuple)) else reports[0]
