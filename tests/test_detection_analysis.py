"""The detection analysis (metrics/detection_analysis.py): its matching against pycocotools', and the
confusion matrix, best-F1 threshold and TIDE error breakdown on a hand-built image whose every error is known."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from cvpipe.data.synthetic import synthetic_coco
from cvpipe.metrics.coco import coco_from_dict, evaluate_coco, max_detections
from cvpipe.metrics.detection_analysis import analyse, by_class, images_for


def pycocotools_counts(gt: dict, results: list[dict], iou_type: str = "bbox") -> dict[int, list[int]]:
    """Category id → [TP, FP, FN] at IoU 0.5, area all, the last maxDets, from pycocotools' own `evalImgs`."""
    coco = coco_from_dict(copy.deepcopy(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iou_type)
        evaluator.params.maxDets = [1, 10, max_detections(gt, results)]
        evaluator.evaluate()
    counts = {c: [0, 0, 0] for c in evaluator.params.catIds}
    for e in evaluator.evalImgs:
        if e is None or e["aRng"] != evaluator.params.areaRng[0]:
            continue
        matched, ignored = e["dtMatches"][0] > 0, e["dtIgnore"][0].astype(bool)
        counts[e["category_id"]][0] += int((matched & ~ignored).sum())
        counts[e["category_id"]][1] += int((~matched & ~ignored).sum())
        counts[e["category_id"]][2] += int(((e["gtMatches"][0] == 0) & ~np.asarray(e["gtIgnore"], bool)).sum())
    return counts


@pytest.mark.parametrize("seed, images, detections", [(0, 60, 3000), (1, 100, 5000), (2, 40, 8000)])
def test_matching_equals_pycocotools(seed, images, detections):
    """Crowd regions, empty images and the maxDets cut: per-class AP50 equals COCOeval's, and TP / FP / FN equal
    pycocotools' evalImgs."""
    gt, results = synthetic_coco(images, detections, seed=seed)
    classes = [c["name"] for c in gt["categories"]]
    reference = evaluate_coco(copy.deepcopy(gt), copy.deepcopy(results), classes, evaluator="pycocotools")
    analysis = analyse(gt, results, classes, max_dets=reference.max_detections)
    for name in classes:
        assert analysis.errors.ap50[name] == pytest.approx(reference.per_class_ap50[name], abs=1e-12)
    counts = pycocotools_counts(gt, results)
    per_class = by_class(images_for(gt, results, "bbox", reference.max_detections), 0.5, len(classes))
    for c, dets in enumerate(per_class):
        tp, kept = (int(v[0]) for v in dets.at(np.array([0.0])))
        assert [tp, kept - tp, dets.objects - tp] == counts[c + 1]
    # the breakdown accounts for every false positive and every object not found
    for c, name in enumerate(classes):
        kinds = analysis.errors.counts[name]
        fp = sum(kinds[k] for k in ("localisation", "class", "both", "duplicate", "background"))
        tp, fp_ref, fn_ref = counts[c + 1]
        assert fp == fp_ref and kinds["missed"] <= fn_ref
    # at confidence 0 the confusion matrix's diagonal is the true positives, and each class row holds its objects
    everything = analyse(gt, results, classes, max_dets=reference.max_detections, conf=0.0)
    assert [everything.confusion[c, c] for c in range(len(classes))] == [counts[c + 1][0] for c in range(len(classes))]
    assert everything.confusion[:-1].sum(1).tolist() == [d.objects for d in per_class]


def box(x: float, y: float, w: float = 100, h: float = 100) -> list[float]:
    return [x, y, w, h]


def known_errors() -> tuple[dict, list[dict]]:
    """One image, classes cat and dog, and one of each error:
    objects g0 cat, g1 cat, g2 dog, g3 cat (nothing near it: missed), g4 cat;
    d5 dog .95 finds g2, d0 cat .9 finds g0, d1 cat .8 the same box (duplicate), d2 cat .7 at IoU 1/3 with g1
    (localisation), d3 dog .6 exactly on g4 (class), d4 cat .5 far from everything (background), d6 dog .4 at IoU
    1/4 with g1 and nothing of its class (both)."""
    objects = [(box(0, 0), 1), (box(200, 0), 1), (box(400, 0), 2), (box(0, 300), 1), (box(0, 500), 1)]
    gt = {"images": [{"id": 1, "width": 640, "height": 640}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                          for i, (b, c) in enumerate(objects)]}
    found = [(box(0, 0), 1, 0.9), (box(0, 0), 1, 0.8), (box(250, 0), 1, 0.7), (box(0, 500), 2, 0.6),
             (box(500, 500, 50, 50), 1, 0.5), (box(400, 0), 2, 0.95), (box(260, 0), 2, 0.4)]
    return gt, [{"image_id": 1, "category_id": c, "bbox": b, "score": s} for b, c, s in found]


def test_error_breakdown_on_known_errors():
    gt, results = known_errors()
    analysis = analyse(gt, results, ["cat", "dog"])
    assert analysis.errors.counts == {
        "cat": {"localisation": 1, "class": 0, "both": 0, "duplicate": 1, "background": 1, "missed": 1},
        "dog": {"localisation": 0, "class": 1, "both": 1, "duplicate": 0, "background": 0, "missed": 0}}
    # By hand. cat: TP .9, FP .8 .7 .5, 4 objects: precision 1 up to recall 1/4, so AP50 = 26/101. dog: TP .95
    # then two FPs, 1 object: 1.
    assert analysis.errors.ap50 == pytest.approx({"cat": 26 / 101, "dog": 1.0})
    fixed = analysis.errors.fixed
    # localisation: d2 becomes a TP for g1 (TP FP TP FP: precision 1 to recall 1/4, 2/3 to 1/2)
    assert fixed["localisation"] == pytest.approx({"cat": (26 + 25 * 2 / 3) / 101, "dog": 1.0})
    # class: d3 leaves dog and becomes a cat TP for g4 at .6 (TP FP FP TP FP: 1 to 1/4, then 1/2 to 1/2)
    assert fixed["class"] == pytest.approx({"cat": (26 + 25 * 0.5) / 101, "dog": 1.0})
    # missed: g3 leaves the count; recall 1/3 at precision 1
    assert fixed["missed"] == pytest.approx({"cat": 34 / 101, "dog": 1.0})
    # duplicates, background and both errors all come after the only cat TP and the only dog TP: removing them
    # changes nothing
    for kind in ("duplicate", "background", "both"):
        assert fixed[kind] == pytest.approx(analysis.errors.ap50)
    delta = analysis.errors.delta()
    assert delta["localisation"] == pytest.approx((25 * 2 / 3) / 101 / 2)
    assert delta["background"] == pytest.approx(0.0)


def test_confusion_matrix_and_threshold_on_known_errors():
    gt, results = known_errors()
    everything = analyse(gt, results, ["cat", "dog"], conf=0.0)
    # rows true cat, dog, background; columns predicted cat, dog, background. d3 (dog on cat g4) is the only
    # confusion; d1, d2, d4 (cat) and d6 (dog) are false alarms; g1 and g3 are missed.
    assert everything.confusion.tolist() == [[1, 1, 2], [0, 1, 0], [3, 1, 0]]
    above = analyse(gt, results, ["cat", "dog"], conf=0.55)  # d4 and d6 dropped
    assert above.confusion.tolist() == [[1, 1, 2], [0, 1, 0], [2, 0, 0]]
    # keeping ≥ .9 gives 2 TP of 2 kept and 5 objects: F1 4/7, the best; the threshold sits half-way to .8
    assert everything.threshold == pytest.approx({"conf": 0.85, "f1": 4 / 7, "precision": 1.0, "recall": 0.4})
    cat = everything.at_conf["cat"]
    assert (cat["tp"], cat["detections"], cat["objects"]) == (1, 4, 4)
    assert (cat["precision"], cat["recall"]) == pytest.approx((1 / 4, 1 / 4))
    assert analyse(gt, results, ["cat", "dog"]).conf == pytest.approx(0.85)  # auto: the best-F1 one


def test_area_ranges_beside_cocos():
    gt, results = synthetic_coco(60, 3000, seed=0)
    classes = [c["name"] for c in gt["categories"]]
    tiny = {"tiny": (0.0, 16.0**2)}
    metrics = {name: evaluate_coco(copy.deepcopy(gt), copy.deepcopy(results), classes, evaluator=name,
                                   area_ranges=tiny) for name in ("faster", "pycocotools")}
    plain = evaluate_coco(copy.deepcopy(gt), copy.deepcopy(results), classes, evaluator="pycocotools")
    for m in metrics.values():  # the 12 stats do not move, whichever evaluator
        assert [m.stats[k] for k in plain.stats] == pytest.approx(list(plain.stats.values()), abs=1e-12)
    assert metrics["faster"].stats["AP_tiny"] == pytest.approx(metrics["pycocotools"].stats["AP_tiny"], abs=1e-9)
    assert 0 < metrics["faster"].stats["AP_tiny"] < 1
    entry = metrics["faster"].as_json()["per_class"][classes[0]]["areas"]
    assert list(entry) == ["small", "medium", "large", "tiny"]
    assert entry["small"]["AP"] == pytest.approx(metrics["pycocotools"].areas[classes[0]]["small"]["AP"], abs=1e-9)


def test_worst_images_and_the_conf_a_run_uses(tmp_path):
    from cvpipe.errors import ConfigError
    from cvpipe.ops.threshold import DEFAULT_CONF, resolve_conf

    gt, results = known_errors()
    worst = analyse(gt, results, ["cat", "dog"], conf=0.0).worst(5)
    # 5 false positives (d1 d2 d3 d4 d6); g1, g3 and g4 not found by a box of their class
    assert len(worst) == 1 and worst[0]["errors"] == 5 + 3
    boxes, labels, found = worst[0]["objects"]
    assert found.tolist() == [True, False, True, False, False]
    # class by class, each in score order: cat d0 d1 d2 d4, then dog d5 d3 d6
    assert worst[0]["detections"][3].tolist() == [True, False, False, False, True, False, False]
    assert boxes[1].tolist() == [200, 0, 300, 100]  # xyxy
    assert resolve_conf(0.4, None) == (0.4, "--conf")
    assert resolve_conf(None, None) == (DEFAULT_CONF, "the default")
    with pytest.raises(ConfigError, match="--conf auto: .* carries no threshold"):
        resolve_conf("auto", None)


def test_a_model_that_found_nothing_carries_no_threshold(tmp_path):
    from cvpipe.engine.checkpoint import save_checkpoint
    from cvpipe.errors import ConfigError
    from cvpipe.ops.threshold import DEFAULT_CONF, resolve_conf

    gt, results = known_errors()
    missing = [{**r, "bbox": [r["bbox"][0] + 5000, r["bbox"][1] + 5000, *r["bbox"][2:]]} for r in results]
    analysis = analyse(gt, missing, ["cat", "dog"])  # every detection far from every object
    assert analysis.threshold["f1"] == 0 and analysis.as_json()["threshold"] is None
    assert "threshold: none" in analysis.tables()[0]
    assert analyse(gt, results, ["cat", "dog"]).as_json()["threshold"]["conf"] == pytest.approx(0.85)
    save_checkpoint(tmp_path / "best.pt", {"model": {}, "metrics": analysis.as_json()})
    conf, source = resolve_conf(None, tmp_path / "best.pt")
    assert conf == DEFAULT_CONF and "found nothing on val" in source
    with pytest.raises(ConfigError, match="found nothing on val"):
        resolve_conf("auto", tmp_path / "best.pt")
