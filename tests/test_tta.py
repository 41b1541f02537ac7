"""Test-time augmentation (`tta:`): views map boxes back exactly, WBF fuses them as hand-computed, scales resize
the head's input and restore it, the COCO SSD on real photos gives mirror-image results for mirrored photos,
and `eval` / `predict` run it while training's evaluations stay plain."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_iou

from cvpipe.config import TTAConfig
from cvpipe.engine.runtime import inference_model
from cvpipe.errors import ConfigError
from cvpipe.io.images import read_image
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.ops.detections import Detections
from cvpipe.ops.inference import detect
from cvpipe.ops.threshold import resolve_conf
from cvpipe.ops.tta import VIEWS, boxes_to_image, detect_augmented, fuse, input_scale, tta_views, view
from cvpipe.pipeline import Pipeline

from .conftest import REPO, shapes_pipeline_file
from .test_engine import PIPELINE as FASTER_RCNN
from .test_ssd import _tiny_ssd

CPU = torch.device("cpu")


@pytest.mark.parametrize(("mirror", "turns"), VIEWS["dihedral"])
def test_a_box_found_in_a_view_maps_back_to_the_image(mirror, turns):
    height, width = 30, 50  # not square: quarter turns swap the sides
    image = torch.zeros(1, height, width, dtype=torch.uint8)
    image[0, 5:12, 8:20] = 1  # the box (8, 5, 20, 12)
    seen = view(image, mirror, turns)[0]
    assert seen.shape == ((width, height) if turns % 2 else (height, width))
    ys, xs = torch.nonzero(seen, as_tuple=True)
    found = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
    assert boxes_to_image(found, mirror, turns, width, height).tolist() == [[8.0, 5.0, 20.0, 12.0]]


def test_weighted_boxes_fusion_averages_what_the_views_agree_on():
    tta = TTAConfig(fusion="wbf", iou=0.55)
    views = [Detections(np.array([[10.0, 10, 20, 20], [50, 50, 60, 60]], np.float32), np.array([0.8, 0.9], np.float32),
                        np.array([0, 0])),
             Detections(np.array([[11.0, 11, 21, 21], [10, 10, 20, 20]], np.float32), np.array([0.6, 0.7], np.float32),
                        np.array([0, 1]))]  # IoU 0.68 with the first view's box; the second is another class
    fused = fuse(views, (100, 100), tta, max_detections=10)
    rows = {(round(s, 4), int(label)): b for s, label, b in
            zip(fused.scores.tolist(), fused.labels, fused.boxes.tolist())}
    # agreed by both views: score-weighted corners, mean score (0.8 + 0.6) / 2; seen by one of two: score halved
    assert set(rows) == {(0.7, 0), (0.45, 0), (0.35, 1)}
    torch.testing.assert_close(torch.tensor(rows[(0.7, 0)]), torch.tensor([(10 * 0.8 + 11 * 0.6) / 1.4] * 2
                                                                           + [(20 * 0.8 + 21 * 0.6) / 1.4] * 2))
    assert rows[(0.45, 0)] == pytest.approx([50, 50, 60, 60])
    assert fused.scores.tolist() == sorted(fused.scores.tolist(), reverse=True)
    assert len(fuse(views, (100, 100), tta, max_detections=2)) == 2
    # NMS keeps the best box of each overlapping group, per class
    kept = fuse(views, (100, 100), TTAConfig(fusion="nms", iou=0.5), max_detections=10)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert len(fuse([Detections.empty(), Detections.empty()], (100, 100), tta, max_detections=10)) == 0


@pytest.mark.parametrize("head", ["faster_rcnn", "retinanet", "fcos"])
def test_scales_resize_a_detectors_input_and_restore_it(tmp_path, head):
    from .test_export import one_stage

    template = FASTER_RCNN if head == "faster_rcnn" else one_stage(head)
    config = load_pipeline(shapes_pipeline_file(tmp_path, template, f"{head}.yaml"))
    model = build_model(config, 2, pretrained=False).eval()
    transform = model.model.transform
    image = torch.rand(3, 120, 160)
    with input_scale(model, 0.5):
        assert transform([image])[0].image_sizes == [(48, 64)]  # min_size 96 × 0.5
    assert transform([image])[0].image_sizes == [(96, 128)]
    # a view's boxes come back in the image's pixels at every scale
    tta = TTAConfig(flips="dihedral", scales=[0.75, 1.0], iou=0.5)
    assert tta_views(tta) == 16
    uint8 = (image * 255).to(torch.uint8)
    for det in detect_augmented(model, [uint8], CPU, tta):
        assert len(det) > 0
        assert (det.boxes[:, 2] <= 160 + 1e-3).all() and (det.boxes[:, 3] <= 120 + 1e-3).all()


def test_scales_need_a_head_that_resizes(tmp_path):
    config = load_pipeline(_tiny_ssd(tmp_path, "score_thresh: 0.0"))
    model = build_model(config, 2, pretrained=False).eval()
    with pytest.raises(ConfigError, match="tta.scales"), input_scale(model, 0.8):
        pass
    path = _tiny_ssd(tmp_path, "score_thresh: 0.0").read_text() + "tta: {enabled: true, scales: [1.0, 0.8]}\n"
    (tmp_path / "ssd_tta.yaml").write_text(path)
    with pytest.raises(ConfigError, match=r"tta\.scales.*faster_rcnn or fast_rcnn"):
        load_pipeline(tmp_path / "ssd_tta.yaml")


def test_tta_is_for_detection(tmp_path):
    from .test_classify import colours_pipeline

    text = colours_pipeline(tmp_path).read_text() + "tta: {enabled: true}\n"
    (tmp_path / "classify_tta.yaml").write_text(text)
    with pytest.raises(ConfigError, match="tta.enabled: test-time augmentation is for detection"):
        load_pipeline(tmp_path / "classify_tta.yaml")


@pytest.mark.assets
def test_mirrored_photos_give_mirrored_detections(photos, monkeypatch):
    """With the flips as views, a photo and its mirror image are seen through the same views: their fused
    detections must be mirror images too. The COCO SSD on real photos."""
    monkeypatch.chdir(REPO)
    config = Pipeline.from_yaml("pipelines/coco_ssd_mobilenet_v2.yaml").config
    model = inference_model(config, None, CPU, "pytorch").model
    tta = TTAConfig(flips="hflip", iou=config.tta.iou)
    compared = 0
    for photo in sorted(photos.glob("*.[jp][pn]g")):
        image = torch.from_numpy(read_image(photo)).permute(2, 0, 1)
        width = image.shape[2]
        fused, fused_mirror = detect_augmented(model, [image, image.flip(-1)], CPU, tta)
        keep = fused.scores >= 0.3
        if not keep.any():
            continue
        boxes = torch.from_numpy(fused.boxes[keep])
        mirror = torch.from_numpy(fused_mirror.at_least(0.3).boxes)
        assert len(boxes) == len(mirror), photo.name
        mirror = torch.stack([width - mirror[:, 2], mirror[:, 1], width - mirror[:, 0], mirror[:, 3]], 1)
        assert (box_iou(boxes, mirror).max(1).values > 0.99).all(), photo.name
        # every confident plain box has a fused twin (whose score is lower where the mirror view missed it)
        plain = detect(model, [image], CPU)[0]
        confident = plain["boxes"][plain["scores"] >= 0.5]
        if len(confident):
            assert (box_iou(confident, torch.from_numpy(fused.boxes)).max(1).values > 0.8).all(), photo.name
        # one view through WBF at the head's own NMS IoU (the default) is the plain detection, unchanged
        single = detect_augmented(model, [image], CPU, TTAConfig(flips="none", iou=config.tta.iou))[0]
        assert len(single) == len(plain["scores"]), photo.name
        torch.testing.assert_close(torch.from_numpy(single.boxes), plain["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(torch.from_numpy(single.scores), plain["scores"], atol=1e-6, rtol=0)
        compared += int(keep.sum())
    assert config.tta.iou == config.model.head.nms_thresh == 0.6  # tta.iou left out: the head's
    assert compared >= 5


def test_eval_and_predict_use_tta_and_training_does_not(tmp_path, monkeypatch):
    text = FASTER_RCNN.replace("eval: {{batch_size: 2}}",
                               "eval: {{batch_size: 2}}\ntta: {{enabled: true, flips: dihedral, scales: [0.75, 1.0]}}")
    path = shapes_pipeline_file(tmp_path, text, "tta.yaml")
    pipeline = Pipeline.from_yaml(path, ["train.epochs=1"])
    calls = []
    import cvpipe.ops.tta as tta_module

    real = tta_module.detect_augmented
    monkeypatch.setattr(tta_module, "detect_augmented", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = pipeline.fit(tensorboard=False)
    at_fit_end = len(calls)  # the evaluation after each epoch is plain; once, at the end, best.pt is scored with the
    calls.clear()            # views, for the threshold predict will use
    metrics = pipeline.evaluate(result.best, json_path=tmp_path / "eval" / "metrics.json")
    assert calls and len(calls) == at_fit_end  # ... `cvpipe eval` uses them too: one evaluation's worth each
    carried = torch.load(result.best, weights_only=True)["metrics"]
    assert carried["threshold_tta"]["conf"] == metrics.analysis.threshold["conf"]
    assert "test-time augmentation" in carried["threshold_tta"]["source"]
    assert "test-time augmentation" not in carried["threshold"]["source"]  # the plain one, for video
    # the stats are pycocotools' on the written (fused) detections
    gt = COCO(str(tmp_path / "eval" / "val_annotations.json"))
    detections = json.loads((tmp_path / "eval" / "val_detections.json").read_text())
    assert detections, "the fused views found nothing"
    evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    assert metrics.stats["AP50"] == pytest.approx(evaluator.stats[1], abs=1e-9)
    calls.clear()
    report = pipeline.predict(tmp_path / "src" / "val", tmp_path / "predict", weights=result.best, conf=0.0)
    assert calls and report.processed == 4
    assert resolve_conf("auto", result.best, views=True)[0] == carried["threshold_tta"]["conf"]
    assert resolve_conf("auto", result.best)[0] == carried["threshold"]["conf"]
    assert json.loads((tmp_path / "predict" / "results.json").read_text())
