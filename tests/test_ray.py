"""`cvpipe predict --engine ray` on a real Ray cluster on loopback: a head (`ray start --head`) and one more
worker node (`ray start --address`), each with one CPU and a bounded object store. Its results equal a local
run's on the same folder, a corrupt file is skipped and reported, and `--resume` redoes only what is missing.
Skips without Ray (`pip install 'cvpipe[ray]'`; `.ci/run` installs it)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cvpipe.data.synthetic import make_shapes
from cvpipe.engine.checkpoint import save_checkpoint
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model

from .conftest import REPO, shapes_pipeline_file
from .test_distributed import detector_and_photos
from .test_engine import PIPELINE

RAY = Path(sys.executable).with_name("ray")
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="needs Ray Data: pip install 'cvpipe[ray]' (.ci/run installs it)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """(HOST:PORT, the environment to reach it with) of a two-node Ray cluster on 127.0.0.1 (its session files
    under a short temp folder: Ray's sockets need a short path)."""
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port = _free_port()
    (temp / "home").mkdir()
    # a HOME of its own: an auth token an earlier local Ray left in ~/.ray would split the nodes' auth modes
    env = {**os.environ, **RAY_ENV, "HOME": str(temp / "home")}
    bounded = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(200 << 20), "--disable-usage-stats"]
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run([str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--include-dashboard", "false", "--temp-dir", str(temp), *bounded],
                       check=True, capture_output=True, env=env, timeout=120)
        subprocess.run([str(RAY), "start", "--address", address, "--node-ip-address", "127.0.0.1", *bounded],
                       check=True, capture_output=True, env=env, timeout=120)
        yield address, env
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _cvpipe(args: list[str], cwd: Path, env: dict | None = None, *, check: bool = True) -> subprocess.CompletedProcess:
    env = {**(env or {**os.environ, **RAY_ENV}), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "cvpipe", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 or not check, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    return result


@needs_ray
def test_ray_cluster_predicts_as_a_local_run(cluster, tmp_path):
    address, env = cluster
    path = detector_and_photos(tmp_path)  # 7 images in two sub-folders
    (tmp_path / "photos" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    common = ["predict", str(path), "--weights", str(tmp_path / "model.pt"), "--source", str(tmp_path / "photos"),
              "--conf", "0.05", "--set", "eval.batch_size=1"]
    _cvpipe([*common, "--out", str(tmp_path / "local")], tmp_path)
    run = _cvpipe([*common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--address", address,
                   "--actors", "2"], tmp_path, env)
    local, ray = tmp_path / "local", tmp_path / "ray"
    assert "2 actor(s)" in run.stdout and "7 images" in run.stdout, run.stdout
    results = json.loads((local / "results.json").read_text())
    assert len(results) > 0
    assert json.loads((ray / "results.json").read_text()) == results
    for name in ("images.json", "detections.csv", "skipped.txt"):
        assert (ray / name).read_text() == (local / name).read_text(), name
    assert "a/broken.png" in (ray / "skipped.txt").read_text()
    assert sorted(p.relative_to(ray) for p in (ray / "images").rglob("*.png")) == \
        sorted(p.relative_to(local) for p in (local / "images").rglob("*.png"))

    import pyarrow.parquet as pq

    table = pq.read_table(ray / "results.parquet").to_pydict()
    assert len(table["file"]) == 8 and table["skipped"].count(None) == 7

    # a run cut short: its journal lost three entries; --resume redoes those three and nothing else
    journal = ray / ".journal.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:-3]) + "\n")
    resumed = _cvpipe([*common, "--out", str(ray), "--engine", "ray", "--address", address, "--resume"], tmp_path,
                      env)
    assert "5 already done" in resumed.stdout, resumed.stdout  # (the first line says what made the journal)
    assert len(journal.read_text().splitlines()) == 9  # what made it, then 8 images
    assert json.loads((ray / "results.json").read_text()) == results
    # a resume with other weights into the same folder is refused before Ray starts any work
    shutil.copy(tmp_path / "model.pt", tmp_path / "other.pt")
    other = _cvpipe([*common, "--out", str(ray), "--engine", "ray", "--address", address, "--resume",
                     "--weights", str(tmp_path / "other.pt")], tmp_path, env, check=False)
    assert other.returncode == 2 and "another model" in other.stderr, other.stderr


@needs_ray
def test_without_a_cluster_the_message_says_how_to_start_one(tmp_path):
    path = shapes_pipeline_file(tmp_path, PIPELINE, "frcnn.yaml")
    model = build_model(load_pipeline(path), 2, pretrained=False)
    save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "classes": ["square", "disc"]})
    make_shapes(tmp_path / "photos", "a", n=1, seed=3)
    env = {**os.environ, **RAY_ENV}
    result = subprocess.run([sys.executable, "-m", "cvpipe", "predict", str(path), "--weights", str(tmp_path / "model.pt"),
                             "--source", str(tmp_path / "photos"), "--out", str(tmp_path / "out"), "--engine", "ray",
                             "--address", f"127.0.0.1:{_free_port()}"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ray start --head" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_without_ray_the_message_says_how_to_install_it(monkeypatch):
    from cvpipe.engine.predict_ray import _ray
    from cvpipe.errors import CvpipeError

    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(CvpipeError, match=r"pip install 'cvpipe\[ray\]'"):
        _ray()
