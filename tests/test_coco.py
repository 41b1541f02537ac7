"""The default COCO evaluator (faster-coco-eval) against the reference, pycocotools, on result sets that
exercise every rule: area ranges, crowd regions, empty images, the maxDets cut, absent classes."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from cvpipe.data.synthetic import synthetic_coco
from cvpipe.metrics.coco import COCO_STATS, evaluate_coco


@pytest.mark.parametrize("seed, images, detections", [(0, 60, 3000), (1, 100, 5000), (2, 40, 8000)])
def test_faster_coco_eval_equals_pycocotools(seed, images, detections):
    gt, results = synthetic_coco(images, detections, seed=seed)
    assert any(a["iscrowd"] for a in gt["annotations"])
    per_image = np.bincount([r["image_id"] for r in results], minlength=images + 1)[1:]
    assert per_image.max() > 100 and (per_image == 0).any()  # the maxDets cut, and images without detections
    classes = [c["name"] for c in gt["categories"]]
    reference = evaluate_coco(copy.deepcopy(gt), copy.deepcopy(results), classes, evaluator="pycocotools")
    faster = evaluate_coco(copy.deepcopy(gt), copy.deepcopy(results), classes, evaluator="faster")
    assert 0.05 < reference.stats["AP"] < 0.95  # neither trivial nor perfect
    for name in COCO_STATS:
        assert faster.stats[name] == pytest.approx(reference.stats[name], abs=1e-9), name
    for name in classes:
        assert faster.per_class[name] == pytest.approx(reference.per_class[name], abs=1e-9)
        np.testing.assert_allclose(faster.precision50[name], reference.precision50[name], atol=1e-9)


def test_a_class_without_ground_truth_and_no_results():
    gt, results = synthetic_coco(20, 300, seed=3)
    gt["categories"].append({"id": 4, "name": "c4"})  # never annotated
    classes = [c["name"] for c in gt["categories"]]
    for evaluator in ("faster", "pycocotools"):
        metrics = evaluate_coco(copy.deepcopy(gt), copy.deepcopy(results), classes, evaluator=evaluator)
        assert np.isnan(metrics.per_class["c4"])
        empty = evaluate_coco(copy.deepcopy(gt), [], classes, evaluator=evaluator)
        assert empty.stats["AP"] == 0.0
