"""torchrun: `predict` sharded across 2 CPU processes (gloo) merges into exactly the single-process output, and
`train` runs as DistributedDataParallel with each rank on half the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from cvpipe.data.synthetic import make_shapes
from cvpipe.engine.checkpoint import save_checkpoint
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model

from .conftest import REPO, shapes_pipeline_file
from .test_engine import PIPELINE


def _run(args: list[str], tmp_path, *, torchrun: bool) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] if torchrun \
        else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}  # torchrun's default, for both sides
    result = subprocess.run([*launcher, "-m", "cvpipe", *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def detector_and_photos(tmp_path):
    """A seeded, untrained tiny Faster R-CNN pipeline (frcnn.yaml, model.pt) and 7 photos in two sub-folders."""
    path = shapes_pipeline_file(tmp_path, PIPELINE, "frcnn.yaml")
    torch.manual_seed(0)
    model = build_model(load_pipeline(path), 2, pretrained=False)
    save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "classes": ["square", "disc"]})
    make_shapes(tmp_path / "photos", "a", n=4, seed=3)
    make_shapes(tmp_path / "photos", "b", n=3, seed=4)
    return path


def test_sharded_predict_merges_into_the_single_process_output(tmp_path):
    path = detector_and_photos(tmp_path)
    common = ["predict", str(path), "--weights", str(tmp_path / "model.pt"), "--source", str(tmp_path / "photos"),
              "--conf", "0.05", "--set", "eval.batch_size=1"]
    _run([*common, "--out", str(tmp_path / "single")], tmp_path, torchrun=False)
    _run([*common, "--out", str(tmp_path / "sharded")], tmp_path, torchrun=True)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert sorted(p.name for p in sharded.glob(".journal*")) == [".journal.shard0of2.jsonl", ".journal.shard1of2.jsonl"]
    lines = [(sharded / f".journal.shard{k}of2.jsonl").read_text().splitlines() for k in (0, 1)]
    assert [len(x) for x in lines] == [5, 4]  # what made it, then every other image
    assert all(json.loads(x[0])["made_by"]["weights"] == str(tmp_path / "model.pt") for x in lines)
    results = json.loads((single / "results.json").read_text())
    assert len(results) > 0
    assert json.loads((sharded / "results.json").read_text()) == results
    for name in ("images.json", "detections.csv"):
        assert (sharded / name).read_text() == (single / name).read_text()
    assert sorted(p.relative_to(sharded) for p in (sharded / "images").rglob("*.png")) == \
        sorted(p.relative_to(single) for p in (single / "images").rglob("*.png"))


def test_an_explicit_shard_writes_its_own_journal(tmp_path):
    from cvpipe.pipeline import Pipeline

    path = shapes_pipeline_file(tmp_path, PIPELINE, "frcnn.yaml")
    model = build_model(load_pipeline(path), 2, pretrained=False)
    save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "classes": ["square", "disc"]})
    make_shapes(tmp_path / "photos", "a", n=5, seed=3)
    pipeline = Pipeline.from_yaml(path)
    first = pipeline.predict(tmp_path / "photos", tmp_path / "out", weights=tmp_path / "model.pt", shard=(1, 2),
                             save_images=False)
    assert first.processed == 2  # images 1 and 3 of 0..4
    images = json.loads((tmp_path / "out" / "images.json").read_text())["images"]
    assert [i["id"] for i in images] == [2, 4]  # ids are the global order: the merge of all shards agrees
    second = pipeline.predict(tmp_path / "photos", tmp_path / "out", weights=tmp_path / "model.pt", shard=(0, 2),
                              save_images=False)
    assert second.processed == 3
    images = json.loads((tmp_path / "out" / "images.json").read_text())["images"]
    assert [i["id"] for i in images] == [1, 2, 3, 4, 5]  # the last shard to finish writes the complete files


@pytest.mark.parametrize("schedule, epochs", [(["train.epochs=2"], 2),
                                               # a time limit far below one epoch: rank 0's estimate (1 epoch)
                                               # is broadcast, so both ranks stop together
                                               (["train.epochs=50", "train.time_limit=0.001"], 1)],
                         ids=["epochs", "time_limit"])
def test_torchrun_trains_as_distributed_data_parallel(tmp_path, schedule, epochs):
    path = shapes_pipeline_file(tmp_path, PIPELINE, "frcnn.yaml")
    result = _run(["train", str(path), "--no-tensorboard", "--set", "train.batch_size=1", *schedule],
                  tmp_path, torchrun=True)
    assert "× 2 processes" in result.stdout and "2 iterations per epoch" in result.stdout  # 4 images / 2 ranks
    runs = list((tmp_path / "runs").glob("shapes*"))
    assert len(runs) == 1  # one run folder, written by rank 0
    state = torch.load(runs[0] / "last.pt", weights_only=True)
    assert state["epoch"] == state["epochs"] == epochs and state["iteration"] == 2 * epochs
    assert [row["epoch"] for row in state["history"]] == list(range(1, epochs + 1))
    assert "AP50" in state["history"][-1]
