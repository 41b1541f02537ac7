"""The shared engine on a tiny synthetic dataset: fit → checkpoints/logs/plots, resume, eval, predict, errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cvpipe.engine.optim import lr_factor, param_groups
from cvpipe.errors import ConfigError, DataError, WeightsError
from cvpipe.loading import load_pipeline
from cvpipe.metrics.coco import COCO_STATS
from cvpipe.pipeline import Pipeline

from .conftest import KilledAfterEpoch, shapes_pipeline_file

PIPELINE = """
name: shapes
task: detect
data: {{format: coco, root: {root}, train: train, val: val, classes: [square, disc]}}
augment: {{train: [{{HorizontalFlip: {{p: 0.5}}}}]}}
model:
  backbone: {{name: mobilenetv2_050, out_indices: [3, 4]}}
  neck: {{name: fpn, out_channels: 32}}
  head: {{name: faster_rcnn, anchor_sizes: [[16, 24], [32, 48]], min_size: 96, max_size: 128, roi_batch_size: 32,
          rpn_pre_nms_top_n: 100, rpn_post_nms_top_n: 50}}
train: {{epochs: 2, batch_size: 2, lr: 0.01, warmup_iters: 2, workers: 0}}
eval: {{batch_size: 2}}
output: {{dir: {out}}}
"""


@pytest.fixture
def shapes_pipeline(tmp_path):
    return shapes_pipeline_file(tmp_path, PIPELINE, "shapes.yaml")


def test_lr_schedule_hand_values():
    assert lr_factor(0, 100, 10) == pytest.approx(0.001)
    assert lr_factor(5, 100, 10) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.01 + 0.99 * 0.5)  # cosine midpoint
    assert lr_factor(100, 100, 10) == pytest.approx(0.01)
    assert lr_factor(500, 100, 10) == pytest.approx(0.01)  # past the end stays at the floor


def test_param_groups_split_backbone_and_no_decay(shapes_pipeline):
    from cvpipe.models.heads import build_model

    config = load_pipeline(shapes_pipeline, ["train.backbone_lr_mult=0.1", "train.weight_decay=0.05"])
    groups = {g["name"]: g for g in param_groups(build_model(config, 2), config.train)}
    assert set(groups) == {"backbone", "backbone/no_decay", "head", "head/no_decay"}
    assert groups["backbone"]["lr_mult"] == 0.1 and groups["head"]["lr_mult"] == 1.0
    assert groups["head/no_decay"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 0.05
    assert all(p.ndim <= 1 for p in groups["backbone/no_decay"]["params"])
    assert all(p.ndim > 1 for p in groups["head"]["params"])


def test_layer_decay_scales_each_backbone_block(shapes_pipeline):
    """train.layer_decay: timm's param_groups_layer_decay over the backbone, times backbone_lr_mult; every
    trainable parameter in exactly one group; the head keeps the full rate."""
    from cvpipe.models.heads import build_model

    config = load_pipeline(shapes_pipeline, ["train.backbone_lr_mult=0.5", "train.layer_decay=0.8"])
    model = build_model(config, 2, pretrained=False)
    groups = param_groups(model, config.train)
    from cvpipe.models.backbones import Backbone

    layered = [g for g in groups if g["name"].startswith("backbone/layer")]
    body = next(m for m in model.modules() if isinstance(m, Backbone)).body
    in_layers = {id(p) for g in layered for p in g["params"]}
    assert layered and all(id(p) in in_layers for p in body.parameters() if p.requires_grad)
    scales = sorted({round(g["lr_mult"] / 0.5, 9) for g in layered})
    assert len(scales) > 3 and all(b / a == pytest.approx(0.8 ** -round(np.log(b / a) / np.log(1 / 0.8)))
                                   for a, b in zip(scales, scales[1:]))
    assert max(scales) <= 1.0 and {g["lr_mult"] for g in groups if g["name"].startswith("head")} == {1.0}
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(p.requires_grad for p in model.parameters())
    assert min(g["lr_mult"] for g in layered) < 0.5 * 0.8 ** 3  # the lowest blocks learn slowest


def test_fit_writes_run_and_resume_replays_the_schedule(shapes_pipeline):
    straight = Pipeline.from_yaml(shapes_pipeline).fit(tensorboard=False)
    run = straight.run_dir
    for name in ("last.pt", "best.pt", "results.csv", "loss_curves.png", "pr_curve.png", "per_class_ap.png",
                 "confusion_matrix.png", "f1_curve.png", "errors.png", "metrics.json", "pipeline.yaml"):
        assert (run / name).is_file(), name
    rows = (run / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and "AP50" in rows[0] and "loss_objectness" in rows[0]
    assert set(COCO_STATS) <= set(json.loads((run / "metrics.json").read_text()))

    # A second run is killed right after epoch 1's checkpoint, then resumed: same weights as the straight run.
    with pytest.raises(KeyboardInterrupt):
        Pipeline.from_yaml(shapes_pipeline).fit(tensorboard=False, callbacks=[KilledAfterEpoch(1)])
    killed = run.with_name("shapes-2")
    assert torch.load(killed / "last.pt", weights_only=True)["epoch"] == 1
    resumed = Pipeline.from_yaml(shapes_pipeline).fit(resume=True, tensorboard=False)
    assert resumed.run_dir == killed and len(resumed.history) == 2
    a = torch.load(run / "last.pt", weights_only=True)["model"]
    b = torch.load(killed / "last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_eval_numbers_equal_pycocotools_on_the_written_files(shapes_pipeline, tmp_path):
    pipeline = Pipeline.from_yaml(shapes_pipeline, ["train.epochs=1"])
    pipeline.fit(tensorboard=False)
    metrics = pipeline.evaluate(json_path=tmp_path / "eval" / "metrics.json")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(written)[:12] == list(COCO_STATS) and set(written["per_class"]) == {"square", "disc"}
    assert {"threshold", "confusion", "curves", "errors"} <= set(written)
    assert all((tmp_path / "eval" / name).is_file() for name in ("confusion_matrix.png", "f1_curve.png", "errors.png"))
    gt = COCO(str(tmp_path / "eval" / "val_annotations.json"))
    detections = json.loads((tmp_path / "eval" / "val_detections.json").read_text())
    assert detections, "an untrained detector still returns low-score boxes"
    evaluator = COCOeval(gt, gt.loadRes(str(tmp_path / "eval" / "val_detections.json")), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert [written[k] for k in COCO_STATS] == pytest.approx(list(evaluator.stats), abs=1e-12)
    assert metrics.stats["AP50"] == pytest.approx(evaluator.stats[1], abs=1e-12)
    # the analysis' counts on the same written files agree with pycocotools' matching (evalImgs at IoU 0.5)
    from .test_detection_analysis import pycocotools_counts

    gt_dict = json.loads((tmp_path / "eval" / "val_annotations.json").read_text())
    counts = pycocotools_counts(gt_dict, detections)
    curves = written["curves"]["0.5"]["per_class"]
    for c, name in enumerate(["square", "disc"]):
        tp, fp, fn = counts[c + 1]
        kinds = written["errors"]["counts"][name]
        assert sum(kinds[k] for k in ("localisation", "class", "both", "duplicate", "background")) == fp
        assert kinds["missed"] <= fn and (tp + fn == 0 or curves[name]["recall"][0] == pytest.approx(tp / (tp + fn), abs=1e-4))


def test_coco_metrics_hand_computed():
    """One image, two objects; one found exactly (score .9), one false positive (.8): recall tops out at 0.5,
    precision 1 up to there, so the 101-point AP is 51/101 at every IoU threshold."""
    from cvpipe.metrics.coco import evaluate_coco

    gt = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "area": 900, "iscrowd": 0}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [0, 70, 20, 20], "score": 0.8}]
    metrics = evaluate_coco(gt, results, ["a"])
    assert metrics.stats["AP"] == pytest.approx(51 / 101)
    assert metrics.stats["AP50"] == pytest.approx(51 / 101)
    assert metrics.stats["AR100"] == pytest.approx(0.5)
    assert metrics.per_class["a"] == pytest.approx(51 / 101)
    empty = evaluate_coco(gt, [], ["a"])
    assert empty.stats["AP"] == 0.0 and empty.stats["AR100"] == 0.0


def test_predict_skips_corrupt_files_and_resumes(shapes_pipeline, tmp_path):
    pipeline = Pipeline.from_yaml(shapes_pipeline, ["train.epochs=1"])
    pipeline.fit(tensorboard=False)
    source = tmp_path / "src" / "val"
    (source / "nested").mkdir()
    (source / "nested" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (source / "notes.txt").write_text("not an image, not looked at")
    out = tmp_path / "pred"
    report = pipeline.predict(source, out, conf=0.0)
    assert report.processed == 4 and [name for name, _ in report.skipped] == ["nested/broken.jpg"]
    assert "not a decodable image" in (out / "skipped.txt").read_text()
    images = json.loads((out / "images.json").read_text())["images"]
    assert [i["file_name"] for i in images] == [f"shape_{i:03d}.png" for i in range(4)]
    results = json.loads((out / "results.json").read_text())
    assert results and {r["image_id"] for r in results} <= {i["id"] for i in images}
    csv_rows = (out / "detections.csv").read_text().splitlines()
    assert csv_rows[0] == "file,class,score,x1,y1,x2,y2" and len(csv_rows) == len(results) + 1
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"shape_{i:03d}.png" for i in range(4)]

    again = pipeline.predict(source, out, conf=0.0, resume=True)
    assert again.processed == 0 and again.resumed == 5
    assert json.loads((out / "results.json").read_text()) == results


def test_read_ahead_keeps_order_raises_in_the_consumer_and_stops_early():
    """predict, benchmark and video decode ahead on a thread (cvpipe/io/prefetch.py)."""
    from cvpipe.io.prefetch import Prefetch

    with Prefetch(iter(range(50)), depth=1) as ahead:
        assert list(ahead) == list(range(50))

    def failing():
        yield from range(3)
        raise DataError("c.png: not a decodable image")

    seen = []
    with pytest.raises(DataError, match="c.png"), Prefetch(failing()) as ahead:
        seen.extend(ahead)
    assert seen == [0, 1, 2]

    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    with Prefetch(endless(), depth=2) as ahead:
        assert next(iter(ahead)) == 0
        time.sleep(0.3)
        assert len(produced) == 3  # the one taken and two ahead: a large image is held three times at most
    assert not ahead.thread.is_alive()


def test_bad_inputs_are_clear_errors(shapes_pipeline, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            Pipeline.from_yaml(shapes_pipeline, ["train.device=cuda"]).fit(tensorboard=False)
    with pytest.raises(WeightsError, match="no trained checkpoint"):
        Pipeline.from_yaml(shapes_pipeline).evaluate()
    with pytest.raises(WeightsError, match="no such checkpoint"):
        Pipeline.from_yaml(shapes_pipeline).evaluate(tmp_path / "missing.pt")
    with pytest.raises(DataError, match="classes not in data.classes") as err:
        Pipeline.from_yaml(shapes_pipeline, ["data.classes=[square]"]).fit(tensorboard=False)
    assert "annotations.json" in str(err.value)

    pipeline = Pipeline.from_yaml(shapes_pipeline, ["train.epochs=1"])
    result = pipeline.fit(tensorboard=False)
    with pytest.raises(WeightsError, match="trained for 2 classes"):
        Pipeline.from_yaml(shapes_pipeline, ["data.classes=[disc, square]"]).evaluate(result.best)
    with pytest.raises(WeightsError, match="does not fit this pipeline's model"):
        Pipeline.from_yaml(shapes_pipeline, ["model.neck.out_channels=16"]).evaluate(result.best)
    np.testing.assert_equal(result.best.exists(), True)


def test_cli_train_eval_predict(shapes_pipeline, tmp_path, capsys):
    from cvpipe.cli import main

    assert main(["train", str(shapes_pipeline), "--no-tensorboard", "--set", "train.epochs=1"]) == 0
    assert "per-class AP" in capsys.readouterr().out
    run_dir = tmp_path / "runs" / "shapes"
    before = sorted(p.name for p in run_dir.iterdir())
    assert main(["eval", str(shapes_pipeline)]) == 0
    out = capsys.readouterr().out
    assert f"weights: {run_dir / 'best.pt'}" in out  # says which checkpoint it scored
    assert sorted(p.name for p in run_dir.iterdir()) == before  # and, without --json, writes nothing
    best_bytes = (run_dir / "best.pt").read_bytes()
    assert main(["eval", str(shapes_pipeline), "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    # eval reports the threshold best.pt carries, the same every time, and never rewrites the checkpoint
    carried = torch.load(run_dir / "best.pt", weights_only=True)["metrics"]["threshold"]
    assert json.loads((tmp_path / "m.json").read_text())["threshold"] == carried
    assert main(["eval", str(shapes_pipeline), "--json", str(tmp_path / "m2.json")]) == 0
    assert json.loads((tmp_path / "m2.json").read_text())["threshold"] == carried
    assert (run_dir / "best.pt").read_bytes() == best_bytes
    out += capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]" in out and "square" in out
    assert (tmp_path / "val_detections.json").exists()
    assert main(["predict", str(shapes_pipeline), "--source", str(tmp_path / "src" / "val" / "*.png"),
                 "--out", str(tmp_path / "pred"), "--conf", "0"]) == 0
    out = capsys.readouterr().out
    assert "4 images" in out and (tmp_path / "pred" / "results.json").exists()
    assert "images/, results.json (COCO results), images.json, detections.csv, skipped.txt" in out
    # best.pt carries the best-F1 threshold on val: predict's default, said on the console and in images.json
    carried = torch.load(run_dir / "best.pt", weights_only=True)["metrics"]["threshold"]
    assert 0 <= carried["conf"] <= 1 and carried["iou"] == 0.5
    assert main(["predict", str(shapes_pipeline), "--source", str(tmp_path / "src" / "val"),
                 "--out", str(tmp_path / "pred2"), "--no-images"]) == 0
    out = capsys.readouterr().out
    assert "→ " in out and "images/" not in out and not (tmp_path / "pred2" / "images").exists()
    assert f"conf: {carried['conf']:g} (best F1 on val, carried by best.pt)" in out
    used = json.loads((tmp_path / "pred2" / "images.json").read_text())["conf"]
    assert used == {"value": carried["conf"], "source": "best F1 on val, carried by best.pt"}
    kept = json.loads((tmp_path / "pred2" / "results.json").read_text())
    assert all(r["score"] >= carried["conf"] - 1e-5 for r in kept)
    # --report: one self-contained page (inline images, nothing fetched) with the analysis' parts
    assert main(["eval", str(shapes_pipeline), "--report", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and "error breakdown" in page and "square" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert main(["predict", str(shapes_pipeline), "--source", str(tmp_path / "nothing_here")]) == 2
    assert "--source" in capsys.readouterr().err


def test_anchor_levels_must_fit_the_neck(shapes_pipeline):
    with pytest.raises(ConfigError) as err:
        load_pipeline(shapes_pipeline, ["model.head.anchor_sizes=[[16, 24]]"])
    assert "model.head.anchor_sizes" in str(err.value) and "neck gives 2 feature levels" in str(err.value)
    with pytest.raises(ConfigError, match="same number of sizes"):
        load_pipeline(shapes_pipeline, ["model.head.anchor_sizes=[[16, 24], [48]]"])


def test_unfreeze_epoch_trains_the_frozen_stages_from_then_on(shapes_pipeline):
    result = Pipeline.from_yaml(shapes_pipeline, ["model.backbone.freeze=2", "train.unfreeze_epoch=1"]).fit(
        tensorboard=False)
    first = torch.load(result.run_dir / "last.pt", weights_only=True)
    from cvpipe.models.heads import build_model

    config = load_pipeline(shapes_pipeline)
    torch.manual_seed(config.train.seed)
    initial = build_model(config, 2).state_dict()
    stem = next(k for k in first["model"] if "conv_stem" in k)
    assert not torch.equal(first["model"][stem], initial[stem])  # trained in epoch 2
    assert any(k.endswith("bn1.num_batches_tracked") for k in first["model"])  # FrozenBatchNorm back to BatchNorm


def test_a_corrupt_training_image_is_skipped_not_fatal(shapes_pipeline, tmp_path):
    (tmp_path / "shapes" / "train" / "shape_001.png").write_bytes(b"")  # an empty file where an image should be
    result = Pipeline.from_yaml(shapes_pipeline, ["train.epochs=1"]).fit(tensorboard=False)
    assert result.history[0]["skipped"] == 1
