"""What a task is to the engine: one `Task` subclass per task, registered under the name `task:` takes.

The engine (fit, evaluate, predict, video, export) looks a pipeline's task up once, `get_task(config.task)`, and
calls these methods; no engine module compares task names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cvpipe.config import PipelineConfig, get_key
from cvpipe.data.records import Dataset, Record
from cvpipe.errors import CvpipeError
from cvpipe.ops.device import device_type

GPU_BATCH = 16  # images (or slices) per forward pass on a GPU where eval.batch_size / tiling.batch are unset

Batches = Iterable[tuple[list[torch.Tensor], list[dict]]]  # (uint8 CHW images, targets) per loader batch


@dataclass
class PredictJob:
    """What `Task.predict` needs besides the images: where the run writes and how it keeps boxes."""

    config: PipelineConfig
    device: torch.device
    classes: list[str]
    out: Path
    conf: float | None  # None where the task keeps every output (not `thresholded`)
    save_images: bool
    submit: Callable[..., Future]  # runs a write on the writer thread
    futures: list[Future] = field(default_factory=list)  # the writes a batch waits for before its journal entry
    root: Path | None = None  # the folder the image names are relative to (files' own metadata: GeoTIFF tags)
    extra: dict[str, Any] = field(default_factory=dict)  # what `prepare_predict` made once per run

    def write(self, fn: Callable, *args) -> None:
        self.futures.append(self.submit(fn, *args))


@dataclass
class FrameJob:
    """What `Task.frame` needs for a video frame."""

    config: PipelineConfig
    device: torch.device
    classes: list[str]
    conf: float
    tracker: Any = None  # ops.tracking.Tracker where the task tracks (detection with video.track or counting)
    counting: Any = None  # ops.counting.Counting where video.lines / video.zones are set


class Task(ABC):
    name: ClassVar[str]
    stats: ClassVar[tuple[str, ...]]  # the evaluation's stat names; the first is the default `eval.best`
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    headline: ClassVar[tuple[str, ...]] = ()  # the stats each epoch's line and the loss plot show
    # False: the model takes images at any size and resizes them itself (detectors); True: predict and video put
    # each image through `augment.eval` first, as evaluation does
    eval_transform: ClassVar[bool] = True
    tracks: ClassVar[bool] = False  # video.track applies (there are boxes to follow)
    thresholded: ClassVar[bool] = False  # predict and video keep outputs scoring ≥ a confidence (--conf)
    # export: the graph's input name: "image" for a batch of one image (detectors: NMS inside leaves each image its
    # own number of boxes), else an NCHW batch of any size
    export_input: ClassVar[str] = "images"
    export_outputs: ClassVar[tuple[str, ...]] = ("logits",)  # an NCHW batch in, class scores out (classify, segment)
    export_check: ClassVar[str | None] = None  # the stat an export is re-scored on (`export.tolerance`); None: none
    eval_files: ClassVar[str] = ""  # what `eval --json` writes beside the metrics, for the console
    description: ClassVar[str]  # "detection": for messages
    tta: ClassVar[bool] = False  # test-time augmentation (`tta:`) applies
    tiles: ClassVar[bool] = False  # `tiling:` applies (large images in slices, ops/slicing.py)
    # images per forward pass on a CPU where eval.batch_size / tiling.batch are unset: the fastest measured by
    # benches/inference_speed.py (a classifier's or FCN's batch of 4 beats one at a time; a detector's does not)
    cpu_batch: ClassVar[int] = 4

    def settle(self, config: PipelineConfig) -> tuple[dict[tuple, Any], list[tuple[tuple, str]]]:
        """(the task's values for the keys the pipeline left to it, by key path: `eval.best: auto` is the first
        stat, unset batch sizes the device's; what does not fit the task, as (key path, message)). The
        configuration itself is left as it is: the loader sets the values once every check has passed."""
        from cvpipe.ops.slicing import slice_size
        from cvpipe.tasks import tasks

        problems = []
        if config.tta.enabled and not self.tta:
            with_tta = " and ".join(task.description for task in tasks().values() if task.tta)
            problems.append((("tta", "enabled"), f"test-time augmentation is for {with_tta} pipelines; this one is "
                             f"{config.task!r}"))
        if config.tiling.mode == "always" and not self.tiles:
            names = [task.description for task in tasks().values() if task.tiles]
            with_tiling = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
            problems.append((("tiling", "mode"), f"slicing large images is for {with_tiling} pipelines; this one is "
                             f"{config.task!r} (tiling.mode: never or auto)"))
        elif config.tiling.mode == "always" and slice_size(config) is None:
            problems.append((("tiling", "size"), f"head {config.model.head.name!r} has no input size to slice by; "
                             "give tiling.size (pixels)"))
        for key in ("track", "lines", "zones"):
            if getattr(config.video, key) and not self.tracks:
                problems.append((("video", key), f"tracking and counting follow detected boxes: they are for "
                                 f"detection and instance pipelines; this one is {config.task!r}"))
        batch = self.cpu_batch if device_type(config.train.device) == "cpu" else GPU_BATCH
        chosen = {key: batch for key in (("eval", "batch_size"), ("tiling", "batch")) if get_key(config, key) is None}
        if config.eval.best == "auto":
            chosen[("eval", "best")] = self.stats[0]
        elif config.eval.best not in self.stats:
            problems.append((("eval", "best"), f"{config.eval.best!r} is not a {self.name} metric; use one of: "
                             f"{', '.join(self.stats)}"))
        return chosen, problems

    # ------------------------------------------------------------------ training and evaluation
    @abstractmethod
    def samples(self, config: PipelineConfig, dataset: Dataset, transform, *, train: bool = False) -> torch.utils.data.Dataset:
        """A split's samples as (uint8 CHW image, target dict), through `transform`; `train`: the training split's."""

    @abstractmethod
    def evaluate(self, model: nn.Module, config: PipelineConfig, dataset: Dataset, batches: Batches,
                 device: torch.device, *, out_dir: Path | None, tta: bool):
        """The task's metrics over `batches` of `dataset` (a metrics.base.Metrics); with `out_dir`, the files a
        user can re-check the numbers with."""

    # ------------------------------------------------------------------ predict
    def output_folders(self, save_images: bool) -> list[str]:
        """The folders of per-image files `predict` writes."""
        return []

    def prepare_predict(self, config: PipelineConfig, save_images: bool) -> dict[str, Any]:
        """Anything read once per predict run (`PredictJob.extra`)."""
        return {}

    @abstractmethod
    def predict(self, model: nn.Module, images: list[torch.Tensor], names: list[str], job: PredictJob) -> list[dict]:
        """One journal entry per image ({"file": name, ...}); per-image files go through `job.write`."""

    def write_results(self, out: Path, finished: Iterable[tuple[int, str, dict]], classes: list[str],
                      used: dict[str, Any]) -> list[str]:
        """The run's result files from the journal entries (image id, name, entry), in discovery order; `used`:
        the settings the run used that its results should say (the confidence and its source); returns what it
        wrote. `finished` is read from the journals as it is iterated (a run may have millions of images): write
        each entry as it comes (`io.images.atomic_open`, `JsonArray`) rather than building the files in memory."""
        return []

    counted: ClassVar[str] = ""  # what `count` counts in a predict run's summary line ("detections"); "": nothing

    def count(self, entries: list[dict]) -> int:
        """How many of `counted` a batch's journal entries hold."""
        return 0

    # ------------------------------------------------------------------ labeling
    labels_objects: ClassVar[bool] = False  # `cvpipe label` reads and writes this task's labels (objects or a class)

    def prelabel(self, entry: dict, path: Path, file_name: str, image_id: int) -> tuple[Record, np.ndarray]:
        """A predict journal entry as the labels a person reviews (`cvpipe label export`): a record and each
        object's score."""
        raise CvpipeError(f"cvpipe label: a {self.name} pipeline's outputs are not labels a labeling tool edits; "
                          "labels are read and written for detection, instance segmentation and classification")

    # ------------------------------------------------------------------ video
    @abstractmethod
    def frame(self, model: nn.Module, image: np.ndarray, tensor: torch.Tensor, job: FrameJob) -> tuple[np.ndarray, dict]:
        """(picture to show, the frame's JSON-line fields)."""

    def frames(self, model: nn.Module, images: list[np.ndarray], tensors: list[torch.Tensor], jobs: list[FrameJob]
               ) -> list[tuple[np.ndarray, dict]]:
        """Frames of several streams (one each), each with its stream's job; one at a time unless a task
        overrides it to put them through the model in one call."""
        return [self.frame(model, image, tensor, job) for image, tensor, job in zip(images, tensors, jobs)]

    # ------------------------------------------------------------------ export
    def export_graph(self, model: nn.Module) -> nn.Module:
        """The module traced to ONNX."""
        return model

    def example_input(self, config: PipelineConfig, model: nn.Module) -> torch.Tensor:
        """What the graph is traced with: the eval augmentation's output size for a 256×256 picture, batch 1."""
        from cvpipe.data.augment import augment_image, build_augment

        generator = torch.Generator().manual_seed(0)
        h, w = augment_image(build_augment(config.augment, "eval"), np.zeros((256, 256, 3), np.uint8)).shape[:2]
        return torch.rand(1, 3, h, w, generator=generator)

    def second_input(self, first: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """A second export check input, of other content (and, where the size is free, another size)."""
        return torch.rand(first.shape, generator=torch.Generator().manual_seed(1))

    def export_difference(self, model: nn.Module, runtime, x: torch.Tensor) -> float:
        """Largest |PyTorch − ONNX Runtime| on `x`."""
        return (model(x) - runtime(x)).abs().max().item()

    def run_exported(self, session_run: Callable, images) -> Any:
        """An exported graph called like the PyTorch model (OnnxModel): an NCHW batch in, the one output out."""
        from cvpipe.models.heads.base import stack_batch

        batch = stack_batch(images).detach().cpu().float().contiguous()
        (out,) = session_run(batch.numpy())
        return torch.from_numpy(out)
