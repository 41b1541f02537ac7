"""`cvpipe train`: the `Trainer` every head of every task shares (heads follow torchvision's loss-dict
convention: `model(images, targets)` returns named losses).

The Trainer holds the state (model, optimizer, schedule, history) and runs the epochs: per iteration warm-up +
cosine LR, AMP on CUDA, gradient clipping. Everything else is a callback (engine/callbacks.py): the unfreeze
schedule, EMA, `train.time_limit`, the task's evaluation every `eval.interval` epochs, early stopping
(`train.patience`), `best.pt`/`last.pt`, and the CSV/TensorBoard logs.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from torch import nn

from cvpipe.config import PipelineConfig
from cvpipe.console import make_console, styled
from cvpipe.engine import distributed
from cvpipe.engine.callbacks import Callback, callbacks_for, epochs_total, make_ema
from cvpipe.engine.checkpoint import check_classes, load_checkpoint
from cvpipe.engine.data import load_split, make_loader, precompute_proposals
from cvpipe.engine.logs import RunLog
from cvpipe.engine.optim import build_optimizer, lr_factor, set_lr
from cvpipe.engine.progress import LoggedProgress
from cvpipe.engine.runs import latest_run_dir, new_run_dir
from cvpipe.errors import CvpipeError, WeightsError
from cvpipe.io.images import write_skipped, write_text
from cvpipe.io.outputs import prepare_dir
from cvpipe.metrics.classification import ClassificationMetrics
from cvpipe.metrics.coco import CocoMetrics
from cvpipe.metrics.segmentation import SegmentationMetrics
from cvpipe.metrics.style import StylizeMetrics
from cvpipe.models.backbones import unfreeze_backbone
from cvpipe.models.heads import build_model, model_preprocess, reuse_classes
from cvpipe.models.weights import WeightsCatalog, recorded_preprocess
from cvpipe.ops.device import resolve_device
from cvpipe.ops.inference import autocast, to_device
from cvpipe.schema import pipeline_schema


@dataclass
class FitResult:
    run_dir: Path
    best: Path
    last: Path
    metrics: CocoMetrics | ClassificationMetrics | SegmentationMetrics | StylizeMetrics | None  # the last evaluation
    history: list[dict]
    train_seconds: float
    plots: list[str]  # file names in run_dir
    stop_reason: str = ""  # why training ended before train.epochs (early stopping), else ""


class TrainStep:
    """One optimisation step on a batch from the loader: to the device, forward (AMP on CUDA), backward,
    clip, step. Returns the losses as floats (`loss` is their sum)."""

    def __init__(self, model, optimizer, scaler, device: torch.device, *, amp: bool, grad_clip: float):
        self.model, self.optimizer, self.scaler, self.device = model, optimizer, scaler, device
        self.amp, self.grad_clip = amp, grad_clip
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, float]:
        images = to_device(images, self.device)
        targets = [{k: v.to(self.device) for k, v in t.items() if isinstance(v, torch.Tensor)} for t in targets]
        with autocast(self.device, self.amp):
            losses = self.model(images, targets)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {**{k: v.item() for k, v in losses.items()}, "loss": loss.item()}


def resume_state(config: PipelineConfig, resume: bool | str | Path) -> tuple[Path, Path, dict]:
    """(run folder, checkpoint, its state) for `--resume` (the pipeline's latest run) or `--resume RUN_DIR|FILE`."""
    if resume is True:
        run_dir = latest_run_dir(config)
        if run_dir is None:
            raise WeightsError(f"--resume: no run of pipeline {config.name!r} with a last.pt under {config.output.dir}/")
        path = run_dir / "last.pt"
    else:
        path = Path(resume)
        run_dir, path = (path, path / "last.pt") if path.is_dir() else (path.parent, path)
    state = load_checkpoint(path)  # the file named, whatever it is called
    if "optimizer" not in state:
        raise WeightsError(f"--resume {path}: this checkpoint has no optimizer state (a best.pt keeps only the "
                           f"weights); resume from {run_dir / 'last.pt'}, or fine-tune from it as a new run")
    return run_dir, path, state


@dataclass
class TrainState:
    """Where training stands, the one thing callbacks read and change (besides the model they act on): `last.pt`
    keeps it, so `--resume` goes on from it."""

    epochs: int  # the schedule's length (a time limit re-estimates it; early stopping cuts it)
    epoch: int = 0  # epochs done
    iteration: int = 0  # optimiser steps done
    best: float | None = None  # the best `eval.best` so far
    improved: bool = False  # whether this epoch's evaluation beat it
    metrics: Any = None  # the latest evaluation (metrics.base.Metrics)
    stop_reason: str = ""  # why training stopped before the schedule's end
    history: list[dict] = field(default_factory=list)  # one row per epoch: losses, lr, time, val stats
    train_seconds: float = 0.0  # time spent in training epochs (not evaluating)


class Trainer:
    """The training loop: state (model, optimizer, schedule, history) and the steps every head shares; all else is
    a callback (engine/callbacks.py). Under torchrun as DistributedDataParallel: every rank trains on its shard of
    the train split, rank 0 alone evaluates and writes the run folder."""

    def __init__(self, config: PipelineConfig, *, resume: bool | str | Path = False, console: Console | None = None,
                 tensorboard: bool = True, callbacks: Sequence[Callback] = ()):
        """`callbacks` run after the pipeline's own (engine/callbacks.py), every hook. The model, the optimizer and
        the train loader come from `build_model`, `build_optimizer` and `train_loader`, which a subclass may
        override."""
        self.rank = distributed.setup(config.train.device)
        self.console = console if self.rank.main and console is not None else make_console(quiet=not self.rank.main)
        state = None
        if resume:
            run_dir, checkpoint, state = resume_state(config, resume)
            prepare_dir(run_dir, "--resume")
            config = pipeline_schema().model_validate(state["config"])  # same data, model and schedule as the killed run
            self.console.print(f"resuming from {checkpoint} after epoch {state['epoch']}/{state['epochs']} → {run_dir}")
        self.config = config
        self.device = distributed.device_for(self.rank, resolve_device(config.train.device))
        self.train_set, warnings = load_split(config, "train")
        self.val_set, val_warnings = load_split(config, "val", self.train_set.classes)
        self.classes = self.train_set.classes
        for line in [*(f"train: {w}" for w in warnings), *(f"val: {w}" for w in val_warnings)]:
            self.console.print(styled("data warning", "yellow", f" {line} (skipped or clipped; `cvpipe data check` lists all)"))
        if state is not None:
            check_classes(checkpoint, state["classes"], self.classes)
        else:
            if self.rank.main:
                prepare_dir(config.output.dir, "output.dir")
                run_dir = new_run_dir(config)
                write_text(run_dir / "pipeline.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
            run_dir = distributed.broadcast(self.rank, run_dir if self.rank.main else None)
        self.run_dir = run_dir

        torch.manual_seed(config.train.seed)
        self.catalog = WeightsCatalog.load()
        self.model = self.build_model(pretrained=state is None, state=state)
        self.preprocess = model_preprocess(self.model)  # recorded in the checkpoints: predicting needs no weights' owner
        # output rows of classes the pretrained head also had start from its rows (model.head.reuse_classes)
        self.reused = (reuse_classes(self.model, config, self.classes, catalog=self.catalog) if state is None
                       else state.get("reused", {}))
        # the pretrained files it started from, {weights id: {file, sha256}}, as best.pt and metrics.json record them
        self.pretrained = dict(self.catalog.resolved) if state is None else state.get("pretrained", {})
        for weights_id, found in self.pretrained.items() if state is None else ():
            self.console.print(f"starting from {weights_id}: {found['file']} (sha256 {found['sha256'][:12]}…)")
        if self.reused and state is None:
            shown = ", ".join(f"{mine} ← {theirs!r}" for mine, theirs in list(self.reused.items())[:8])
            self.console.print(f"reused {len(self.reused)} of {len(self.classes)} output rows from the pretrained "
                               f"head: {shown}{' ...' if len(self.reused) > 8 else ''} (model.head.reuse_classes)")
        self.model = self.model.to(self.device)
        if config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.callbacks = [*callbacks_for(config), *callbacks]
        unfreeze_at = config.train.unfreeze_epoch if config.model.backbone.freeze else None
        if state is not None and unfreeze_at is not None and state["epoch"] >= unfreeze_at:
            unfreeze_backbone(self.model, keep_bn_frozen=config.model.backbone.frozen_bn)
        self.optimizer, self.ema = self.build_optimizer(), make_ema(self.model, config)
        use_amp = config.train.amp and self.device.type == "cuda"
        self.amp = use_amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
        self.state = TrainState(epochs=config.train.epochs)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None and state.get("ema") is not None:
                self.ema.module.load_state_dict(state["ema"])
            self.state.epochs, self.state.epoch, self.state.iteration = state["epochs"], state["epoch"], state["iteration"]
            self.state.best, self.state.history = state["best"], list(state["history"])
            self.state.train_seconds, self.state.stop_reason = state["train_seconds"], state.get("stop_reason", "")
            for callback in self.callbacks:
                callback.load_state_dict(state.get("callbacks", {}).get(callback.name, {}))
        self.log = RunLog(run_dir, tensorboard=tensorboard) if self.rank.main else None
        self.step = self._train_step()
        self.shard = (self.rank.rank, self.rank.world)
        self.iters_per_epoch = len(self.train_loader(0))
        self.skipped: dict[str, None] = {}  # "file: reason" of every image left out, in order, once
        self.skips_unsaved = False
        self.plots: list[str] = []
        self.lr = config.train.lr

    def build_model(self, pretrained: bool, state: dict | None = None) -> nn.Module:
        """The model to train, on the CPU: the pipeline's, with its pretrained weights unless resuming (from
        `state`, a checkpoint, whose recorded preprocessing it keeps)."""
        return build_model(self.config, len(self.classes), pretrained=pretrained, catalog=self.catalog,
                           preprocess=recorded_preprocess(state) if state else None)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """Over the model's trainable parameters (again after an unfreeze)."""
        return build_optimizer(self.model, self.config.train)

    def train_loader(self, epoch: int):
        """This rank's shard of the train split for `epoch` (its shuffle and augmentation draws follow the epoch)."""
        return make_loader(self.config, self.train_set, "train", epoch=epoch, shard=self.shard)

    def _train_step(self) -> TrainStep:
        return TrainStep(distributed.wrap(self.rank, self.model, self.device), self.optimizer, self.scaler,
                         self.device, amp=self.amp, grad_clip=self.config.train.grad_clip)

    @property
    def eval_model(self):
        return self.ema.module if self.ema is not None else self.model

    def unfreeze(self) -> None:
        """Train the frozen backbone stages too, from a new optimizer (and EMA) over every parameter."""
        unfreeze_backbone(self.model, keep_bn_frozen=self.config.model.backbone.frozen_bn)
        self.model.to(self.device)
        self.optimizer, self.ema = self.build_optimizer(), make_ema(self.model, self.config)
        self.step = self._train_step()

    def stop(self, reason: str) -> None:
        """End training after this epoch: the schedule is cut to it, and `reason` is reported and kept."""
        self.state.stop_reason, self.state.epochs = reason, self.state.epoch
        self.console.print(styled("stopped", "yellow", f" {reason}"))

    def skip(self, reason: str, note: str) -> None:
        if reason not in self.skipped:
            self.skipped[reason] = None
            self.console.print(styled("skipped", "yellow", f" {reason} ({note})"))
            self.skips_unsaved = True

    def fit(self) -> FitResult:
        config, rank = self.config, self.rank
        self.console.print(f"training {config.name} on {self.device}"
                           + (f" × {rank.world} processes" if rank.distributed else "")
                           + f": {len(self.train_set)} train / {len(self.val_set)} val images, {len(self.classes)} "
                           f"classes, {self.iters_per_epoch} iterations per epoch → {self.run_dir}")
        every_rank = [c for c in self.callbacks if c.every_rank]
        main_only = [c for c in self.callbacks if not c.every_rank]
        with LoggedProgress(self.console) as progress:
            self.progress = progress
            precompute_proposals(config, [self.train_set, self.val_set], progress)
            self.bar = progress.add_task("train", total=self.state.epochs * self.iters_per_epoch, completed=self.state.iteration,
                                         info="")
            while self.state.epoch < self.state.epochs:
                torch.manual_seed(config.train.seed + self.state.epoch)  # the heads' sampling too: a resumed epoch replays
                for callback in self.callbacks:
                    callback.on_epoch_start(self)
                row = self._train_epoch()
                for callback in every_rank:
                    callback.on_epoch_end(self, row)
                if not rank.main:  # rank 0 evaluates and saves; the others wait for it before the next epoch
                    distributed.barrier(rank)
                    if config.train.patience:
                        self.state.epochs = distributed.broadcast(rank, self.state.epochs)
                    continue
                self.state.history.append(row)
                for callback in main_only:
                    callback.on_epoch_end(self, row)
                if self.skips_unsaved:  # once an epoch, not once per skipped file
                    write_skipped(self.run_dir / "skipped.txt", self.skipped)
                    self.skips_unsaved = False
                distributed.barrier(rank)
                if config.train.patience:  # early stopping on rank 0 ends every rank's schedule
                    self.state.epochs = distributed.broadcast(rank, self.state.epochs)
        if not rank.main:
            distributed.teardown(rank)
            return FitResult(self.run_dir, self.run_dir / "best.pt", self.run_dir / "last.pt", None, [],
                             self.state.train_seconds, [], self.state.stop_reason)
        self.log.close()
        for callback in self.callbacks:
            callback.on_fit_end(self)
        distributed.teardown(rank)
        return FitResult(self.run_dir, self.run_dir / "best.pt", self.run_dir / "last.pt", self.state.metrics, self.state.history,
                         self.state.train_seconds, self.plots, self.state.stop_reason)

    def _train_epoch(self) -> dict:
        """One pass over this rank's shard of the train split; the epoch's row of mean losses."""
        config = self.config
        self.model.train()
        sums: dict[str, float] = defaultdict(float)
        steps = skipped_images = 0
        total = self.state.epochs * self.iters_per_epoch
        self.lr = config.train.lr * lr_factor(self.state.iteration, total, config.train.warmup_iters)
        start = time.perf_counter()
        for images, targets, skipped in self.train_loader(self.state.epoch):
            skipped_images += len(skipped)
            for reason in skipped:
                self.skip(reason, "listed in skipped.txt")
            if not images:
                continue
            self.lr = set_lr(self.optimizer, config.train.lr, lr_factor(self.state.iteration, total, config.train.warmup_iters))
            values = self.step(images, targets)
            if not math.isfinite(values["loss"]):
                raise CvpipeError(f"loss is {values['loss']} at iteration {self.state.iteration} (epoch {self.state.epoch + 1}); "
                                  f"lower train.lr (now {config.train.lr}) or check the data with `cvpipe data check`")
            self.state.iteration += 1
            steps += 1
            for k, v in values.items():
                if k != "loss":
                    sums[k] += v
            for callback in self.callbacks:
                callback.on_step(self, values)
            self.progress.update(self.bar, advance=1, description=f"epoch {self.state.epoch + 1}/"
                                 f"{epochs_total(self.state.epochs, self.config.train.time_limit)}",
                                 info=f"loss {values['loss']:.3f}")
        seconds = time.perf_counter() - start
        self.state.train_seconds += seconds
        self.state.epoch += 1
        row = {"epoch": self.state.epoch, "iteration": self.state.iteration, "lr": round(self.lr, 8), "seconds": round(seconds, 2),
               **{k: round(v / max(1, steps), 5) for k, v in sums.items()},
               "loss": round(sum(sums.values()) / max(1, steps), 5)}
        if skipped_images:
            row["skipped"] = skipped_images
        return row


def fit(config: PipelineConfig, *, resume: bool | str | Path = False, console: Console | None = None,
        tensorboard: bool = True, callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train (see `Trainer`); `resume`: the latest run of this pipeline, or a run folder or checkpoint."""
    return Trainer(config, resume=resume, console=console, tensorboard=tensorboard, callbacks=callbacks).fit()
