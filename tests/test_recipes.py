"""Training-recipe settings that make the plain model carry what test-time views carry: Faster R-CNN's
`refine_boxes` regresses each kept box once more from itself, and scores it by both passes' mean."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import clip_boxes_to_image

from cvpipe.errors import ConfigError
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model

from .conftest import shapes_pipeline_file
from .test_engine import PIPELINE as FASTER_RCNN
from .test_instance import mask_rcnn_pipeline


def _plain_and_refining(tmp_path):
    refining_yaml = FASTER_RCNN.replace("rpn_post_nms_top_n: 50", "rpn_post_nms_top_n: 50, refine_boxes: true")
    assert refining_yaml != FASTER_RCNN
    torch.manual_seed(0)
    plain = build_model(load_pipeline(shapes_pipeline_file(tmp_path, FASTER_RCNN, "plain.yaml")), 2,
                        pretrained=False).eval()
    refining = build_model(load_pipeline(shapes_pipeline_file(tmp_path, refining_yaml, "refine.yaml")), 2,
                           pretrained=False).eval()
    assert refining.load_state_dict(plain.state_dict()) is not None  # the same tensors under the same names
    return plain, refining


def test_refined_boxes_take_the_second_regression(tmp_path):
    plain, refining = _plain_and_refining(tmp_path)
    predictor = plain.model.roi_heads.box_predictor
    with torch.no_grad():  # every RoI: class probabilities [0.2, 0.2, 0.6] (background first); the second class's
        predictor.cls_score.weight.zero_()  # box moves right by 0.1 of its width (dx 1 × torchvision's weight 1/10)
        predictor.cls_score.bias.copy_(torch.tensor([0.0, 0.0, math.log(3)]))
        predictor.bbox_pred.weight.zero_()
        predictor.bbox_pred.bias.zero_()
        predictor.bbox_pred.bias[8] = 1.0
    refining.load_state_dict(plain.state_dict())
    image = torch.rand(3, 96, 128)  # min_size 96, max_size 128: no resizing, boxes in these pixels
    with torch.no_grad():
        first, = plain([image])
        refined, = refining([image])
    assert len(first["boxes"]) > 0 and set(first["labels"].tolist()) == {0, 1}
    assert torch.equal(refined["labels"], first["labels"])
    moved = first["boxes"].clone()
    second = first["labels"] == 1
    width = moved[second, 2] - moved[second, 0]
    moved[second, 0::2] += 0.1 * width[:, None]
    torch.testing.assert_close(refined["boxes"], clip_boxes_to_image(moved, (96, 128)))
    # both passes gave each box the same probability, so the mean is it
    torch.testing.assert_close(refined["scores"], first["scores"])
    assert sorted(set(first["scores"].round(decimals=4).tolist())) == pytest.approx([0.2, 0.6])


def test_refined_scores_are_the_mean_of_both_passes(tmp_path):
    plain, refining = _plain_and_refining(tmp_path)
    image = torch.rand(3, 96, 128)
    heads = plain.model.roi_heads
    with torch.no_grad():
        first, = plain([image])
        refined, = refining([image])
        # the second pass by hand: the box head on the first pass's boxes (the image is not resized)
        features = plain.model.backbone(plain.model.transform([image])[0].tensors)
        logits, _ = heads.box_predictor(heads.box_head(heads.box_roi_pool(features, [first["boxes"]], [(96, 128)])))
    again = logits.softmax(-1)[torch.arange(len(first["labels"])), first["labels"] + 1]
    assert len(first["scores"]) > 0
    mean = (first["scores"] + again) / 2
    order = mean.argsort(descending=True, stable=True)  # best first, as every detector returns them
    torch.testing.assert_close(refined["scores"], mean[order])
    torch.testing.assert_close(refined["labels"], first["labels"][order])
    assert not torch.allclose(mean, first["scores"])  # the random head scores the moved boxes anew


def test_refining_nothing_gives_nothing(tmp_path):
    _, refining = _plain_and_refining(tmp_path)
    refining.model.roi_heads.score_thresh = 1.0  # no score passes
    with torch.no_grad():
        found = refining([torch.rand(3, 96, 128), torch.rand(3, 96, 128)])
    assert [tuple(f["boxes"].shape) for f in found] == [(0, 4), (0, 4)]


def test_mask_rcnn_refuses_refine_boxes(tmp_path):
    with pytest.raises(ConfigError, match="refine_boxes"):
        load_pipeline(mask_rcnn_pipeline(tmp_path, ", refine_boxes: true"))
