"""The Trainer's callbacks: early stopping (`train.patience`) in a real training run, uninterrupted and across
`--resume`; the evaluation's values are scripted so the stopping epoch is known by hand."""

from __future__ import annotations

import json

import pytest
import torch

from cvpipe.engine import callbacks as callbacks_module
from cvpipe.pipeline import Pipeline

from .conftest import KilledAfterEpoch, shapes_pipeline_file
from .test_engine import PIPELINE

# AP after each epoch; with patience 3 the best is epoch 2's 0.3, and epochs 3, 4, 5 do not beat it: stop after 5
AP_BY_EPOCH = [0.1, 0.3, 0.2, 0.25, 0.2, 0.9, 0.9, 0.9]


class ScriptedMetrics:
    def __init__(self, ap: float):
        self.stats = {"AP": ap, "AP50": ap}

    def as_json(self) -> dict:
        return dict(self.stats)

    def table(self) -> list:
        return []

    def plots(self, out_dir) -> list[str]:
        return []


@pytest.fixture
def scripted(monkeypatch):
    """Evaluation returns AP_BY_EPOCH in turn; `calls[0]` is how many epochs were evaluated."""
    calls = [0]

    def evaluate(*args, **kwargs):
        calls[0] += 1
        return ScriptedMetrics(AP_BY_EPOCH[calls[0] - 1])

    monkeypatch.setattr(callbacks_module, "evaluate", evaluate)
    return calls


def pipeline_file(tmp_path):
    return shapes_pipeline_file(tmp_path, PIPELINE.replace("epochs: 2,", "epochs: 8,"), "shapes.yaml")


def test_patience_stops_training_and_says_why(tmp_path, scripted):
    result = Pipeline.from_yaml(pipeline_file(tmp_path), ["train.patience=3"]).fit(tensorboard=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4, 5]
    assert result.stop_reason.startswith("early stopping after epoch 5: AP has not improved for 3 epochs")
    assert "best 0.3 at epoch 2" in result.stop_reason
    assert json.loads((result.run_dir / "metrics.json").read_text())["stop_reason"] == result.stop_reason
    last = torch.load(result.run_dir / "last.pt", weights_only=True)
    assert last["epochs"] == 5 and last["stop_reason"] == result.stop_reason
    assert torch.load(result.run_dir / "best.pt", weights_only=True)["epoch"] == 2


def test_patience_counts_on_across_resume(tmp_path, scripted):
    path = pipeline_file(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        Pipeline.from_yaml(path, ["train.patience=3"]).fit(tensorboard=False, callbacks=[KilledAfterEpoch(3)])
    assert torch.load(tmp_path / "runs" / "shapes" / "last.pt", weights_only=True)["callbacks"]["early_stopping"] == \
        {"best_epoch": 2}
    # had the count restarted at the resume, epoch 4 (4 epochs after "epoch 0") would already stop the run
    resumed = Pipeline.from_yaml(path).fit(resume=True, tensorboard=False)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4, 5] and scripted[0] == 5
    assert resumed.stop_reason.startswith("early stopping after epoch 5")


def test_patience_is_validated(tmp_path):
    from cvpipe.errors import ConfigError
    from cvpipe.loading import load_pipeline

    with pytest.raises(ConfigError, match=r"train.patience: expected int >= 1, got 0"):
        load_pipeline(pipeline_file(tmp_path), ["train.patience=0"])


def test_an_epoch_count_under_a_time_limit_is_shown_as_the_estimate_it_is():
    from cvpipe.engine.callbacks import epoch_line, epochs_total

    assert epochs_total(3, None) == "3" and epochs_total(3, 1.0) == "~3"
    row = {"epoch": 2, "loss": 0.5, "loss_box": 0.2, "lr": 0.01, "seconds": 3.0}
    assert epoch_line(row, epochs_total(3, 1.0), "AP50", ("AP", "AP50")).startswith("epoch 2/~3  loss 0.500 (box 0.200)")
    evaluated = epoch_line(row | {"AP": 0.25, "AP50": 0.5, "APs": 0.125}, "3", "APs", ("AP", "AP50"))
    assert evaluated.endswith("│ val AP 0.250  AP50 0.500  APs 0.125")  # the task's headline, then eval.best


def test_the_optimizer_comes_from_an_overridable_step_and_callbacks_read_one_state(tmp_path, scripted):
    from cvpipe.engine.callbacks import Callback
    from cvpipe.engine.fit import Trainer
    from cvpipe.loading import load_pipeline

    class Watcher(Callback):
        name = "watcher"

        def __init__(self):
            self.seen = []

        def on_epoch_end(self, t, row: dict) -> None:
            state = t.state
            self.seen.append((state.epoch, state.epochs, state.best, state.improved, len(state.history)))

    class PlainSGD(Trainer):
        def build_optimizer(self):
            return torch.optim.SGD([p for p in self.model.parameters() if p.requires_grad], lr=1e-3)

    watcher = Watcher()
    trainer = PlainSGD(load_pipeline(pipeline_file(tmp_path), ["train.epochs=2"]), tensorboard=False,
                       callbacks=[watcher])
    assert type(trainer.optimizer) is torch.optim.SGD and len(trainer.optimizer.param_groups) == 1
    result = trainer.fit()
    # AP 0.1 then 0.3: each epoch improves on the last; the row is in the history by the time callbacks see it
    assert watcher.seen == [(1, 2, 0.1, True, 1), (2, 2, 0.3, True, 2)]
    assert result.history == trainer.state.history and trainer.state.epoch == 2
