"""What the training loop does besides optimising, one callback each: the unfreeze schedule, EMA, the time
limit, evaluation, early stopping, checkpoints and logs. `Trainer` (engine/fit.py) calls them in list order; a
callback's `state_dict()` goes into `last.pt`, so `--resume` restores it.

`t` is the `Trainer`: where training stands is `t.state` (a `TrainState`: epoch, epochs, iteration, best,
improved, metrics, stop reason, history), what it acts on `t.model`, `t.ema`, `t.optimizer`, `t.config`. Hooks: `on_epoch_start(t)` and `on_step(t, values)` on every rank; `on_epoch_end(t, row)` on every rank for
callbacks with `every_rank`, else on rank 0 alone (it evaluates and writes); `on_fit_end(t)` on rank 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from cvpipe.engine import distributed
from cvpipe.engine.checkpoint import save_checkpoint
from cvpipe.engine.evaluate import evaluate
from cvpipe.io.images import write_text
from cvpipe.tasks import get_task

EMA_DECAY = 0.9998


class Callback:
    name: ClassVar[str]
    every_rank: ClassVar[bool] = False  # on_epoch_end on every DDP rank (else rank 0 alone)

    def on_epoch_start(self, t) -> None: ...

    def on_step(self, t, values: dict[str, float]) -> None: ...

    def on_epoch_end(self, t, row: dict) -> None: ...

    def on_fit_end(self, t) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class Unfreeze(Callback):
    """`train.unfreeze_epoch`: the backbone stages `model.backbone.freeze` held train from that epoch on, with a
    new optimizer (and EMA) over all of them."""

    name = "unfreeze"

    def __init__(self, at: int):
        self.at = at

    def on_epoch_start(self, t) -> None:
        if t.state.epoch == self.at:
            t.unfreeze()
            t.console.print(f"epoch {t.state.epoch + 1}: backbone stages unfrozen (train.unfreeze_epoch {self.at})")


class EMA(Callback):
    """timm's ModelEmaV3 of the weights (with warm-up): what evaluation scores and best.pt keeps."""

    name = "ema"

    def on_step(self, t, values: dict[str, float]) -> None:
        t.ema.update(t.model, step=t.state.iteration - 1)


class TimeLimit(Callback):
    """`train.time_limit` minutes: after every epoch the epoch count is re-estimated from the mean epoch time so
    far (rank 0's, on every rank), and the cosine schedule stretches to it."""

    name = "time_limit"
    every_rank = True

    def __init__(self, minutes: float):
        self.minutes = minutes

    def on_epoch_end(self, t, row: dict) -> None:
        epochs = max(t.state.epoch, math.floor(self.minutes * 60 / (t.state.train_seconds / t.state.epoch)))
        t.state.epochs = distributed.broadcast(t.rank, epochs)
        t.progress.update(t.bar, total=t.state.epochs * t.iters_per_epoch)


class Evaluation(Callback):
    """Every `eval.interval` epochs and after the last: the task's evaluation on val (of the EMA weights where
    kept), into the epoch's row; `t.state.improved` says whether `eval.best` beat the best so far."""

    name = "evaluation"

    def on_epoch_end(self, t, row: dict) -> None:
        t.state.improved = False
        if not (t.state.epoch % t.config.eval.interval == 0 or t.state.epoch >= t.state.epochs):
            return
        skipped: list[str] = []
        t.state.metrics = evaluate(t.eval_model, t.config, t.val_set, t.device, progress=t.progress, skipped=skipped)
        for reason in skipped:
            t.skip(f"val {reason}", "left out of the metrics")
        row.update({k: float(f"{v:.6g}") for k, v in t.state.metrics.stats.items()})  # style losses are ~1e-6
        t.log.scalars(t.state.epoch, t.state.metrics.stats, "val")
        value = t.state.metrics.stats[t.config.eval.best]
        t.state.improved = improves(value, t.state.best, t.config.eval.best, get_task(t.config.task).lower_is_better)
        if t.state.improved:
            t.state.best = value


class EarlyStopping(Callback):
    """`train.patience`: stop once `eval.best` has not improved for this many epochs; the reason goes to the
    console, `metrics.json` and `last.pt` (a resumed run counts on from the epoch of its best)."""

    name = "early_stopping"

    def __init__(self, patience: int):
        self.patience, self.best_epoch = patience, 0

    def on_epoch_end(self, t, row: dict) -> None:
        if t.state.improved:
            self.best_epoch = t.state.epoch
        if t.state.epoch - self.best_epoch >= self.patience and t.state.epoch < t.state.epochs:
            t.stop(f"early stopping after epoch {t.state.epoch}: {t.config.eval.best} has not improved for "
                   f"{t.state.epoch - self.best_epoch} epochs (train.patience {self.patience}); best "
                   f"{t.state.best:.4g} at epoch {self.best_epoch}")

    def state_dict(self) -> dict:
        return {"best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best_epoch = state.get("best_epoch", 0)


class Checkpoints(Callback):
    """`best.pt` when `eval.best` improved (the weights, EMA's where kept, and the metrics) and `last.pt` every
    epoch (everything a resume needs, the callbacks' state included)."""

    name = "checkpoints"

    def on_epoch_end(self, t, row: dict) -> None:
        preprocess = dataclasses.asdict(t.preprocess) if t.preprocess is not None else None
        common = {"classes": t.classes, "reused": t.reused, "pretrained": t.pretrained, "preprocess": preprocess,
                  "config": t.config.model_dump(mode="json"), "epoch": t.state.epoch, "epochs": t.state.epochs, "iteration": t.state.iteration, "history": t.state.history,
                  "train_seconds": t.state.train_seconds, "stop_reason": t.state.stop_reason}
        if t.state.improved:
            save_checkpoint(t.run_dir / "best.pt", {**common, "model": t.eval_model.state_dict(), "best": t.state.best,
                                                    "metrics": t.state.metrics.as_json()})
        save_checkpoint(t.run_dir / "last.pt", {
            **common, "best": t.state.best, "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
            "scaler": t.scaler.state_dict(), "ema": t.ema.module.state_dict() if t.ema is not None else None,
            "callbacks": {c.name: c.state_dict() for c in t.callbacks}})


class ThresholdWithViews(Callback):
    """Detection with `tta.enabled`: training evaluates plainly, but predict sees the pipeline's views, whose
    fused scores sit elsewhere. So at the end best.pt's weights are evaluated once with the views, and best.pt
    carries that best-F1 threshold too (`threshold_tta`), for predict's `--conf auto`; video runs plainly and
    keeps the plain one."""

    name = "threshold_with_views"

    def on_fit_end(self, t) -> None:
        import copy

        from cvpipe.engine.checkpoint import load_checkpoint
        from cvpipe.ops.tta import describe

        path = t.run_dir / "best.pt"
        if not path.is_file():
            return
        state = load_checkpoint(path)
        model = copy.deepcopy(t.eval_model)
        model.load_state_dict(state["model"])
        metrics = evaluate(model, t.config, t.val_set, t.device, progress=t.progress, tta=True)
        threshold = metrics.as_json().get("threshold")
        if threshold is None:
            return
        state["metrics"]["threshold_tta"] = {**threshold, "source": f"{threshold['source']}, with test-time "
                                                                    f"augmentation ({describe(t.config.tta)})"}
        save_checkpoint(path, state)
        plain = state["metrics"].get("threshold")
        t.console.print(f"best.pt carries conf {threshold['conf']:.3f} for predict's --conf auto: the best F1 on val "
                        f"with the pipeline's test-time augmentation, as predict sees it (video, which runs without "
                        "the views, keeps " + (f"the plain {plain['conf']:.3f})" if plain else "the default: plainly "
                                               "the model found nothing on val)"))


class Logs(Callback):
    """Per step: TensorBoard scalars. Per epoch: results.csv and the console line. At the end: metrics.json
    (with the stop reason) and the task's plots."""

    name = "logs"

    def on_step(self, t, values: dict[str, float]) -> None:
        if t.log:
            t.log.scalars(t.state.iteration, {**values, "lr": t.lr}, "train")

    def on_epoch_end(self, t, row: dict) -> None:
        t.log.epoch_row(t.state.history)
        t.console.print(epoch_line(row, epochs_total(t.state.epochs, t.config.train.time_limit), t.config.eval.best,
                                   get_task(t.config.task).headline))

    def on_fit_end(self, t) -> None:
        import json

        from cvpipe.viz import plots

        t.plots = ["loss_curves.png"]
        if t.state.metrics is not None:
            written = (t.state.metrics.as_json() | ({"stop_reason": t.state.stop_reason} if t.state.stop_reason else {})
                       | ({"reused_classes": t.reused} if t.reused else {})
                       | ({"pretrained": t.pretrained} if t.pretrained else {}))
            write_text(t.run_dir / "metrics.json", json.dumps(written, indent=2))
            t.plots += t.state.metrics.plots(t.run_dir)
        task = get_task(t.config.task)
        plots.loss_curves(t.state.history, t.run_dir / "loss_curves.png", task.headline,
                          unit_interval=not task.lower_is_better)


def callbacks_for(config) -> list[Callback]:
    """The pipeline's callbacks, in the order they run."""
    train = config.train
    found: list[Callback] = []
    if config.model.backbone.freeze and train.unfreeze_epoch is not None:
        found.append(Unfreeze(train.unfreeze_epoch))
    if train.ema:
        found.append(EMA())
    if train.time_limit:
        found.append(TimeLimit(train.time_limit))
    found.append(Evaluation())
    if train.patience:
        found.append(EarlyStopping(train.patience))
    task = get_task(config.task)
    with_views = [ThresholdWithViews()] if config.tta.enabled and task.tta and task.thresholded else []
    return [*found, Checkpoints(), *with_views, Logs()]


def make_ema(model, config):
    if not config.train.ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=EMA_DECAY, use_warmup=True)


def improves(value: float, best: float | None, stat: str, lower_is_better: frozenset[str]) -> bool:
    """Whether `value` of `stat` beats the best so far (the task's losses are better lower, the rest higher)."""
    if best is None or best < 0 and stat not in lower_is_better:  # -1.0: a checkpoint from before this rule
        return True
    return value < best if stat in lower_is_better else value > best


def epochs_total(epochs: int, time_limit: float | None) -> str:
    """The epoch count as shown: under `train.time_limit` it is an estimate that moves as epochs are timed (`~3`)."""
    return f"~{epochs}" if time_limit else str(epochs)


def epoch_line(row: dict, epochs: str, best_key: str, headline: tuple[str, ...]) -> str:
    """One epoch as the console shows it: the losses, and the task's `headline` stats where it was evaluated."""
    losses = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in row.items() if k.startswith("loss_"))
    line = f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.3f} ({losses})  lr {row['lr']:.4g}  {row['seconds']:.1f}s"
    shown = [k for k in headline if k in row]
    if shown:
        line += "  │ val " + "  ".join(f"{k} {row[k]:.3f}" for k in shown)
        if best_key not in shown:
            line += f"  {best_key} {row[best_key]:.3f}"
    return line
