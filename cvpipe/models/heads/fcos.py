"""FCOS head: torchvision's FCOS (anchor-free: every feature-map location inside an object's centre region learns
the distances to its box's four sides, with a centre-ness score) on any backbone + FPN neck.

Class indices are the head's own outputs (sigmoid scores, no background column), as for RetinaNet. A whole
torchvision FCOS (COCO) loads by torchvision's names and picks its classes by name (retinanet.py's helpers).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead

from cvpipe.config import ReusesClasses
from cvpipe.models.heads.base import OneStageDetector
from cvpipe.models.heads.registry import HeadSpec, needs_pyramid_or_none, register_head
from cvpipe.models.heads.retinanet import load_torchvision_whole, reuse_logit_rows
from cvpipe.models.necks import FeatureBody, build_neck


class FCOSSettings(ReusesClasses):
    """torchvision FCOS: one point per location and level (its size the level's stride), GroupNorm head."""

    task: ClassVar[str] = "detect"
    name: Literal["fcos"]
    min_size: Annotated[int, Field(gt=0)] = 800  # short side the images are resized to (eval; train too)
    max_size: Annotated[int, Field(gt=0)] = 1333  # ... unless the long side would exceed this
    train_sizes: list[Annotated[int, Field(gt=0)]] = []  # multi-scale training: short sides picked at random
    head_convs: Annotated[int, Field(ge=1)] = 4  # 3×3 convolutions of each branch before its predictor
    # a location learns an object when it lies within this many strides of the object's centre
    center_sampling_radius: Annotated[float, Field(gt=0)] = 1.5
    topk_candidates: Annotated[int, Field(gt=0)] = 1000  # best locations per level kept before NMS
    # detections scoring less are dropped before NMS
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    # per-class NMS: boxes overlapping a better one this much (IoU) go
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6
    detections_per_img: Annotated[int, Field(gt=0)] = 100  # at most this many detections per image, best first


class FCOSDetector(OneStageDetector):
    """FCOS on the body's levels (the calling convention: OneStageDetector)."""

    def __init__(self, body: FeatureBody, cfg: FCOSSettings, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        points = AnchorGenerator(tuple((stride,) for stride in body.strides), ((1.0,),) * body.num_levels)
        preprocess = body.backbone.preprocess
        self.model = FCOS(
            body, num_classes, min_size=(*cfg.train_sizes, cfg.min_size), max_size=cfg.max_size,
            image_mean=list(preprocess.mean), image_std=list(preprocess.std), anchor_generator=points,
            head=FCOSHead(body.out_channels, 1, num_classes, num_convs=cfg.head_convs),
            center_sampling_radius=cfg.center_sampling_radius, score_thresh=cfg.score_thresh,
            nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_img, topk_candidates=cfg.topk_candidates)


def _build(config, backbone, num_classes: int) -> FCOSDetector:
    return FCOSDetector(build_neck(backbone, config.model.neck), config.model.head, num_classes)


def _neck_problems(model):
    problems = needs_pyramid_or_none(model)
    if not problems and model.neck.name != "none" and model.neck.out_channels % 32:
        problems.append((("model", "neck", "out_channels"), f"the fcos head's GroupNorm needs a multiple of 32, got "
                         f"{model.neck.out_channels}"))
    return problems


register_head(HeadSpec("fcos", FCOSSettings, _build, neck_problems=_neck_problems, tta_scales=True,
                       input_size=lambda head: head.min_size, load_whole=load_torchvision_whole,
                       reuse_classes=reuse_logit_rows))
