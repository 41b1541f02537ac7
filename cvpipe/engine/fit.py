"""`cvpipe train`: the training loop every head of every task shares (heads follow torchvision's loss-dict
convention: `model(images, targets)` returns named losses).

Per iteration: warm-up + cosine LR, AMP on CUDA, gradient clipping, optional EMA. Per epoch: CSV and
TensorBoard rows, `last.pt` (everything needed to resume), and every `eval.interval` epochs the task's
evaluation (COCO mAP, top-1, mIoU, perceptual loss), which may replace `best.pt`. With `train.time_limit`, the number of epochs is re-estimated
from the measured epoch time after every epoch, and the cosine schedule stretches to it.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from rich.console import Console

from cvpipe.config import LOWER_IS_BETTER, PipelineConfig
from cvpipe.console import make_console, styled
from cvpipe.engine import distributed
from cvpipe.engine.checkpoint import check_classes, load_checkpoint, save_checkpoint
from cvpipe.engine.data import load_split, make_loader, precompute_proposals
from cvpipe.engine.device import resolve_device
from cvpipe.engine.evaluate import evaluate
from cvpipe.engine.inference import autocast, to_device
from cvpipe.engine.logs import RunLog
from cvpipe.engine.optim import build_optimizer, lr_factor, set_lr
from cvpipe.engine.progress import LoggedProgress
from cvpipe.engine.runs import latest_run_dir, new_run_dir
from cvpipe.errors import CvpipeError, WeightsError
from cvpipe.io.images import write_text
from cvpipe.io.outputs import prepare_dir
from cvpipe.metrics.classification import ClassificationMetrics
from cvpipe.metrics.coco import CocoMetrics
from cvpipe.metrics.segmentation import SegmentationMetrics
from cvpipe.metrics.style import StylizeMetrics
from cvpipe.models.backbones import unfreeze_backbone
from cvpipe.models.heads import build_model
from cvpipe.viz import plots

EMA_DECAY = 0.9998


@dataclass
class FitResult:
    run_dir: Path
    best: Path
    last: Path
    metrics: CocoMetrics | ClassificationMetrics | SegmentationMetrics | StylizeMetrics | None  # the last evaluation
    history: list[dict]
    train_seconds: float
    plots: list[str]  # file names in run_dir


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


def make_ema(model: torch.nn.Module, config: PipelineConfig):
    if not config.train.ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=EMA_DECAY, use_warmup=True)


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


def fit(config: PipelineConfig, *, resume: bool | str | Path = False, console: Console | None = None,
        tensorboard: bool = True) -> FitResult:
    """Train; under torchrun as DistributedDataParallel (engine/distributed.py): every rank trains on its shard of
    the train split, rank 0 alone evaluates and writes the run folder."""
    rank = distributed.setup(config.train.device)
    console = console if rank.main and console is not None else make_console(quiet=not rank.main)
    state = None
    if resume:
        run_dir, checkpoint, state = resume_state(config, resume)
        prepare_dir(run_dir, "--resume")
        config = PipelineConfig.model_validate(state["config"])  # same data, model and schedule as the killed run
        console.print(f"resuming from {checkpoint} after epoch {state['epoch']}/{state['epochs']} → {run_dir}")
    device = distributed.device_for(rank, resolve_device(config.train.device))
    train_set, warnings = load_split(config, "train")
    val_set, val_warnings = load_split(config, "val", train_set.classes)
    classes = train_set.classes
    for line in [*(f"train: {w}" for w in warnings), *(f"val: {w}" for w in val_warnings)]:
        console.print(styled("data warning", "yellow", f" {line} (skipped or clipped; `cvpipe data check` lists all)"))
    if state is not None:
        check_classes(checkpoint, state["classes"], classes)
    else:
        if rank.main:
            prepare_dir(config.output.dir, "output.dir")
            run_dir = new_run_dir(config)
            write_text(run_dir / "pipeline.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        run_dir = distributed.broadcast(rank, run_dir if rank.main else None)

    torch.manual_seed(config.train.seed)
    model = build_model(config, len(classes), pretrained=state is None).to(device)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    unfreeze_at = config.train.unfreeze_epoch if config.model.backbone.freeze else None
    if state is not None and unfreeze_at is not None and state["epoch"] >= unfreeze_at:
        unfreeze_backbone(model, keep_bn_frozen=config.model.backbone.frozen_bn)
    optimizer, ema = build_optimizer(model, config.train), make_ema(model, config)
    use_amp = config.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    epochs, epoch, iteration, best, history, train_seconds = config.train.epochs, 0, 0, None, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        epochs, epoch, iteration = state["epochs"], state["epoch"], state["iteration"]
        best, history, train_seconds = state["best"], list(state["history"]), state["train_seconds"]

    log = RunLog(run_dir, tensorboard=tensorboard) if rank.main else None
    step = TrainStep(distributed.wrap(rank, model, device), optimizer, scaler, device, amp=use_amp,
                     grad_clip=config.train.grad_clip)
    shard = (rank.rank, rank.world)
    iters_per_epoch = len(make_loader(config, train_set, "train", shard=shard))
    metrics = None
    console.print(f"training {config.name} on {device}" + (f" × {rank.world} processes" if rank.distributed else "")
                  + f": {len(train_set)} train / {len(val_set)} val images, {len(classes)} classes, "
                  f"{iters_per_epoch} iterations per epoch → {run_dir}")
    skip_report: dict[str, None] = {}  # "file: reason" of every training image left out, in order, once
    with LoggedProgress(console) as progress:
        precompute_proposals(config, [train_set, val_set], progress)
        task = progress.add_task("train", total=epochs * iters_per_epoch, completed=iteration, info="")
        while epoch < epochs:
            torch.manual_seed(config.train.seed + epoch)  # the heads' sampling too: a resumed epoch replays exactly
            if epoch == unfreeze_at:
                unfreeze_backbone(model, keep_bn_frozen=config.model.backbone.frozen_bn)
                model.to(device)
                optimizer, ema = build_optimizer(model, config.train), make_ema(model, config)
                step = TrainStep(distributed.wrap(rank, model, device), optimizer, scaler, device, amp=use_amp,
                                 grad_clip=config.train.grad_clip)
                console.print(f"epoch {epoch + 1}: backbone stages unfrozen (train.unfreeze_epoch {unfreeze_at})")
            model.train()
            sums: dict[str, float] = defaultdict(float)
            steps = 0
            skipped_images = 0
            lr = config.train.lr * lr_factor(iteration, epochs * iters_per_epoch, config.train.warmup_iters)
            start = time.perf_counter()
            for images, targets, skipped in make_loader(config, train_set, "train", epoch=epoch, shard=shard):
                skipped_images += len(skipped)
                for reason in skipped:
                    if reason not in skip_report:
                        skip_report[reason] = None
                        console.print(styled("skipped", "yellow", f" {reason} (listed in skipped.txt)"))
                if not images:
                    continue
                lr = set_lr(optimizer, config.train.lr, lr_factor(iteration, epochs * iters_per_epoch,
                                                                  config.train.warmup_iters))
                values = step(images, targets)
                if not math.isfinite(values["loss"]):
                    raise CvpipeError(f"loss is {values['loss']} at iteration {iteration} (epoch {epoch + 1}); lower "
                                      f"train.lr (now {config.train.lr}) or check the data with `cvpipe data check`")
                if ema is not None:
                    ema.update(model, step=iteration)
                iteration += 1
                steps += 1
                for k, v in values.items():
                    if k != "loss":
                        sums[k] += v
                if log:
                    log.scalars(iteration, {**values, "lr": lr}, "train")
                progress.update(task, advance=1, description=f"epoch {epoch + 1}/{epochs}", info=f"loss {values['loss']:.3f}")
            seconds = time.perf_counter() - start
            train_seconds += seconds
            epoch += 1
            if config.train.time_limit:  # re-estimate the epoch count from the mean epoch time so far
                epochs = max(epoch, math.floor(config.train.time_limit * 60 / (train_seconds / epoch)))
                epochs = distributed.broadcast(rank, epochs)  # every rank runs rank 0's schedule
                progress.update(task, total=epochs * iters_per_epoch)
            row = {"epoch": epoch, "iteration": iteration, "lr": round(lr, 8), "seconds": round(seconds, 2),
                   **{k: round(v / max(1, steps), 5) for k, v in sums.items()},
                   "loss": round(sum(sums.values()) / max(1, steps), 5)}
            if skipped_images:
                row["skipped"] = skipped_images
                if rank.main:
                    write_text(run_dir / "skipped.txt", "".join(f"{line}\n" for line in skip_report))
            evaluated = epoch % config.eval.interval == 0 or epoch >= epochs
            if not rank.main:  # rank 0 evaluates and saves; the others wait for it before the next epoch
                distributed.barrier(rank)
                continue
            if evaluated:
                eval_model = ema.module if ema is not None else model
                val_skipped: list[str] = []
                metrics = evaluate(eval_model, config, val_set, device, progress=progress, skipped=val_skipped)
                for reason in val_skipped:
                    if reason not in skip_report:
                        skip_report[reason] = None
                        console.print(styled("skipped", "yellow", f" val {reason} (left out of the metrics)"))
                if val_skipped:
                    write_text(run_dir / "skipped.txt", "".join(f"{line}\n" for line in skip_report))
                row.update({k: float(f"{v:.6g}") for k, v in metrics.stats.items()})  # style losses are ~1e-6
                log.scalars(epoch, metrics.stats, "val")
            history.append(row)
            log.epoch_row(history)
            weights = (ema.module if ema is not None else model).state_dict()
            common = {"classes": classes, "config": config.model_dump(mode="json"), "epoch": epoch, "epochs": epochs,
                      "iteration": iteration, "history": history, "train_seconds": train_seconds}
            if evaluated and improves(metrics.stats[config.eval.best], best, config.eval.best):
                best = metrics.stats[config.eval.best]
                save_checkpoint(run_dir / "best.pt", {**common, "model": weights, "best": best,
                                                      "metrics": metrics.as_json()})
            save_checkpoint(run_dir / "last.pt", {
                **common, "best": best, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "ema": ema.module.state_dict() if ema is not None else None})
            console.print(_epoch_line(row, epochs, config.eval.best))
            distributed.barrier(rank)
    if not rank.main:
        distributed.teardown(rank)
        return FitResult(run_dir, run_dir / "best.pt", run_dir / "last.pt", None, [], train_seconds, [])
    log.close()
    plot_files = ["loss_curves.png"]
    if metrics is not None:
        write_text(run_dir / "metrics.json", json.dumps(metrics.as_json(), indent=2))
        plot_files += plots.metric_plots(metrics, run_dir)
    plots.loss_curves(history, run_dir / "loss_curves.png")
    distributed.teardown(rank)
    return FitResult(run_dir, run_dir / "best.pt", run_dir / "last.pt", metrics, history, train_seconds, plot_files)


def improves(value: float, best: float | None, stat: str) -> bool:
    """Whether `value` of `stat` beats the best so far (losses are better lower, everything else higher)."""
    if best is None or best < 0 and stat not in LOWER_IS_BETTER:  # -1.0: a checkpoint from before this rule
        return True
    return value < best if stat in LOWER_IS_BETTER else value > best


def _epoch_line(row: dict, epochs: int, best_key: str) -> str:
    losses = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in row.items() if k.startswith("loss_"))
    line = f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.3f} ({losses})  lr {row['lr']:.4g}  {row['seconds']:.1f}s"
    shown = [k for k in ("AP", "AP50", "top1", "top5", "mIoU", "pixel_accuracy", "perceptual_loss") if k in row]
    if shown:
        line += "  │ val " + "  ".join(f"{k} {row[k]:.3f}" for k in shown)
        if best_key not in shown:
            line += f"  {best_key} {row[best_key]:.3f}"
    return line
