"""What a newcomer runs first, as they would run it: the installed `cvpipe` command in a folder of their own with
no data/ or weights/ in it, a bundled pipeline by name, `--version`, a pipe into `head`, and the small promises
of the output (what predict says it wrote, eval naming its checkpoint, progress lines in logs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cvpipe import __version__
from cvpipe.io.images import read_image
from cvpipe.viz.draw import draw_sample, label_origin, label_scale, palette

from .conftest import REPO

CVPIPE = str(Path(sys.executable).with_name("cvpipe"))


def run(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "CVPIPE_DATA": str(cwd / "no-data-here"), "CVPIPE_CACHE": str(cwd / "cache"), **env}
    return subprocess.run([CVPIPE, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def coco_ssd_weights(catalog):
    catalog.fetch("ssd_mobilenet_v2.coco")
    return catalog.root


@pytest.fixture
def stranger(tmp_path, photos) -> Path:
    """An empty working folder with only the user's own images in it."""
    (tmp_path / "my photos").mkdir()
    for name in ("coffee.png", "chelsea.png", "astronaut.png"):
        shutil.copy(photos / name, tmp_path / "my photos" / name)
    return tmp_path


@pytest.mark.assets
def test_the_ready_detector_predicts_and_streams_from_a_folder_without_data(stranger, coco_ssd_weights):
    for pipeline in ("coco_ssd_mobilenet_v2", str(REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml")):
        done = run(["predict", pipeline, "--source", "my photos", "--out", "pred", "--conf", "0.5"], stranger,
                   CVPIPE_WEIGHTS=str(coco_ssd_weights))
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        rows = (stranger / "pred" / "detections.csv").read_text().splitlines()[1:]
        assert {"cup", "cat", "person"} <= {row.split(",")[1] for row in rows}
        assert sorted(p.name for p in (stranger / "pred" / "images").iterdir()) == ["astronaut.png", "chelsea.png",
                                                                                   "coffee.png"]
    done = run(["video", "coco_ssd_mobilenet_v2", "--source", "my photos", "--out", "clip.mp4", "--fps", "5"], stranger,
               CVPIPE_WEIGHTS=str(coco_ssd_weights))
    assert done.returncode == 0, done.stderr
    lines = (stranger / "clip.jsonl").read_text().splitlines()
    assert len(lines) == 3 and any(json.loads(line)["boxes"] for line in lines)
    assert not (stranger / "data").exists() and not (stranger / "weights").exists()


@pytest.mark.assets
def test_weights_go_to_the_user_cache_not_the_current_folder(tmp_path, catalog, coco_ssd_weights):
    weights = catalog.local_path(catalog.get("ssd_mobilenet_v2.coco"))
    (tmp_path / "cvpipe" / "weights").mkdir(parents=True)
    shutil.copy(weights, tmp_path / "cvpipe" / "weights" / weights.name)
    env = {k: v for k, v in os.environ.items() if k not in ("CVPIPE_WEIGHTS", "CVPIPE_DATA", "CVPIPE_CACHE")}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    done = subprocess.run([CVPIPE, "pipelines"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert f"weights  {tmp_path / 'cvpipe' / 'weights'}" in done.stdout
    assert f"data     {tmp_path / 'cvpipe' / 'data'}" in done.stdout
    assert "coco_ssd_mobilenet_v2" in done.stdout
    done = subprocess.run([CVPIPE, "weights", "list"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert any(line.startswith("ssd_mobilenet_v2.coco") and " yes " in line for line in done.stdout.splitlines())
    assert not (tmp_path / "weights").exists()


def test_version_and_a_closed_pipe_give_no_traceback(tmp_path):
    done = run(["--version"], tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"cvpipe {__version__}"
    piped = subprocess.run(f"'{CVPIPE}' weights list | head -1", shell=True, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert piped.stdout.startswith("weights folder:") and piped.stderr == ""


def test_a_label_stays_in_the_image_and_reads_on_its_tag():
    assert label_origin((60, 14), (5, 30, 50, 60), (100, 200, 3)) == (5, 16)  # just above the box
    assert label_origin((60, 14), (5, 0, 50, 60), (100, 200, 3)) == (5, 60)  # at the top edge: below it
    assert label_origin((60, 14), (5, 0, 50, 95), (100, 200, 3)) == (5, 0)  # no room around: inside its top
    assert label_origin((60, 14), (190, 40, 199, 60), (100, 200, 3)) == (140, 26)  # shifted left to fit
    assert [label_scale((h, w, 3)) for h, w in ((300, 400), (1080, 1920), (2472, 2299), (10000, 9000))] == [
        0.5, 0.96, 1.236, 2.0]  # readable once shown at a screen's width, from a photo to a large scene
    image = draw_sample(np.zeros((80, 120, 3), np.uint8), np.array([[10.0, 0.0, 100.0, 50.0]]), np.array([0]),
                        ["Tree"], scores=np.array([0.9]))
    tag = image[51:73, 12:60]  # the box touches the top: its label's tag is below it, filled in the class colour
    assert (np.abs(tag.astype(int) - palette(0)).sum(axis=2) == 0).mean() > 0.5
    ink = (0, 0, 0) if sum(np.multiply(palette(0), (0.299, 0.587, 0.114))) > 140 else (255, 255, 255)
    assert (np.abs(tag.astype(int) - ink).sum(axis=2) < 60).sum() > 20  # and the text in the contrasting ink


def test_one_epoch_draws_visible_loss_points(tmp_path):
    from cvpipe.viz.plots import loss_curves

    loss_curves([{"epoch": 1, "loss": 1.5, "loss_box_reg": 0.5, "AP50": 0.2}], tmp_path / "loss.png", ("AP", "AP50"))
    image = read_image(tmp_path / "loss.png")
    left = image[:, : image.shape[1] // 2].astype(int)
    blue = (abs(left[..., 0] - 31) < 30) & (abs(left[..., 1] - 119) < 30) & (abs(left[..., 2] - 180) < 30)  # C0
    assert blue.sum() > 10


@pytest.mark.parametrize("term", ["xterm", None])  # CI runs without TERM; rich behaves differently there
def test_progress_prints_plain_lines_where_there_is_no_terminal(monkeypatch, term):
    import io

    from rich.console import Console

    from cvpipe.engine.progress import LoggedProgress

    if term is None:
        monkeypatch.delenv("TERM", raising=False)
    else:
        monkeypatch.setenv("TERM", term)
    log = io.StringIO()
    with LoggedProgress(Console(file=log, force_terminal=False), log_every=0.0) as progress:
        task = progress.add_task("train", total=4, info="")
        for step in range(4):
            progress.update(task, advance=1, info=f"loss {1.0 / (step + 1):.2f}")
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("train: 1/4 (25 %), ") and lines[0].endswith("loss 1.00")
    assert lines[-1].startswith("train: 4/4 (100 %), ") and len(lines) == 4


def test_the_wheel_ships_the_bundled_pipelines_and_defaults(tmp_path):
    """`pip install .` gives what `cvpipe predict coco_ssd_mobilenet_v2` needs outside the checkout."""
    import zipfile

    source = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "data", "weights", "runs", "build", "*.egg-info", "__pycache__", "benches", "tests"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("cvpipe-*.whl")
    assert wheel.name.startswith(f"cvpipe-{__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = {f"cvpipe/pipelines/{p.name}" for p in (REPO / "pipelines").glob("*.yaml")}
    assert bundled and bundled <= names
    assert {"cvpipe/defaults.yaml", "cvpipe/models/weights.yaml", "cvpipe/paths.py"} <= names


@pytest.mark.parametrize("written, declared", [("voc", "coco"), ("coco", "yolo"), ("yolo", "voc")])
def test_validate_names_a_data_format_that_does_not_match_the_files(capsys, tmp_path, written, declared):
    from cvpipe.cli import main
    from cvpipe.data.formats import write_dataset
    from cvpipe.data.synthetic import make_shapes

    from .test_hostile import PIPELINE as SHAPES

    root = tmp_path / "data"
    for split, seed in (("train", 0), ("val", 1)):
        write_dataset(make_shapes(tmp_path / "src", split, n=2, seed=seed), root, written, split)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(SHAPES.format(root=root, out=tmp_path / "runs").replace("format: coco", f"format: {declared}"))
    code = main(["validate", str(pipeline)])
    text = capsys.readouterr().err
    assert code == 2 and f"data.format: {declared}: cannot read data.train" in text, text
    assert f"look like format {written}: set data.format: {written}" in text
    pipeline.write_text(SHAPES.format(root=root, out=tmp_path / "runs").replace("format: coco", f"format: {written}"))
    assert main(["validate", str(pipeline)]) == 0


def test_a_mistyped_bundled_name_says_did_you_mean_and_leaves_no_folder(capsys, tmp_path, monkeypatch):
    from cvpipe.cli import main
    from cvpipe.console import counted

    monkeypatch.chdir(tmp_path)
    assert main(["predict", "coco_ssd_mobilnet_v2", "--source", "photos"]) == 2
    assert 'did you mean "coco_ssd_mobilenet_v2"?' in capsys.readouterr().err
    assert main(["validate", "treecrowns_faster_rnn"]) == 2
    assert 'did you mean "treecrowns_faster_rcnn"?' in capsys.readouterr().err
    assert main(["predict", "coco_ssd_mobilenet_v2", "--source", "no_such_folder"]) == 2
    assert "--source no_such_folder: no such file or folder" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no empty runs/ left behind
    assert [counted(1, "image"), counted(3, "image"), counted(2, "box", "boxes"), counted(1200, "image")] == [
        "1 image", "3 images", "2 boxes", "1,200 images"]


def test_a_bundled_pipeline_is_copied_into_the_users_folder_to_edit(capsys, tmp_path, monkeypatch):
    from cvpipe.cli import main
    from cvpipe.data.fetchers import fetch_dataset
    from cvpipe.loading import load_pipeline
    from cvpipe.paths import BUNDLED_PIPELINES, data_dir

    monkeypatch.chdir(tmp_path)
    assert main(["pipelines", "copy", "sample_faster_rcnn", "my_detector.yaml"]) == 0
    copied = tmp_path / "my_detector.yaml"
    assert copied.read_bytes() == (BUNDLED_PIPELINES / "sample_faster_rcnn.yaml").read_bytes()
    sample = fetch_dataset("sample", data_dir())
    assert load_pipeline(copied).data.root == sample / "voc"  # `root: sample/voc` still finds the fetched sample
    assert "cvpipe validate my_detector.yaml" in capsys.readouterr().out
    copied.write_text("name: mine\n")
    assert main(["pipelines", "copy", "sample_faster_rcnn", "my_detector.yaml"]) == 2  # never over the user's edits
    assert "already exists" in capsys.readouterr().err and copied.read_text() == "name: mine\n"
    (tmp_path / "configs").mkdir()
    assert main(["pipelines", "copy", "coco_ssd_mobilenet_v2.yaml", "configs"]) == 0
    assert (tmp_path / "configs" / "coco_ssd_mobilenet_v2.yaml").is_file()
    for wrong, hint in (("coco_ssd_mobilnet_v2", 'did you mean "coco_ssd_mobilenet_v2"?'), ("../etc/x", "`cvpipe pipelines` lists")):
        assert main(["pipelines", "copy", wrong]) == 2
        assert hint in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "my_detector.yaml"]
