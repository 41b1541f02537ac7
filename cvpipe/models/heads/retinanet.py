"""RetinaNet head: torchvision's RetinaNet (focal-loss classification and box regression sub-networks shared
across pyramid levels, anchors matched by IoU) on any backbone + FPN neck.

Class indices are the head's own outputs (sigmoid scores, no background column), so a one-class model such as
DeepForest's tree detector loads as is. A whole torchvision RetinaNet (COCO, v1 and v2) or DeepForest's model
loads by torchvision's tensor names (`load_whole`); the classes a pipeline shares with them start from their rows
(`model.head.reuse_classes`), which is also how a ready pipeline picks COCO's 80 classes from torchvision's 91
outputs.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead

from cvpipe.config import ReusesClasses, pyramid_levels
from cvpipe.models.heads.base import OneStageDetector, load_renamed, renamed
from cvpipe.models.heads.registry import HeadSpec, Problems, needs_pyramid_or_none, register_head
from cvpipe.models.necks import FeatureBody, build_neck


class RetinaNetSettings(ReusesClasses):
    """torchvision RetinaNet: per level, `len(anchor_sizes[i]) × len(aspect_ratios)` anchors; focal loss."""

    task: ClassVar[str] = "detect"
    name: Literal["retinanet"]
    # one list per feature level; null = torchvision's: 32 px at the first level doubling per level, each with
    # its 2^(1/3) and 2^(2/3) multiples
    anchor_sizes: list[list[Annotated[int, Field(gt=0)]]] | None = None
    aspect_ratios: list[Annotated[float, Field(gt=0)]] = [0.5, 1.0, 2.0]  # anchor height ÷ width, at every size
    min_size: Annotated[int, Field(gt=0)] = 800  # short side the images are resized to (eval; train too)
    max_size: Annotated[int, Field(gt=0)] = 1333  # ... unless the long side would exceed this
    train_sizes: list[Annotated[int, Field(gt=0)]] = []  # multi-scale training: short sides picked at random
    head_norm: Literal["none", "group"] = "none"  # group: GroupNorm(32) after each head convolution (RetinaNet v2)
    box_loss: Literal["l1", "smooth_l1", "giou", "diou", "ciou"] = "l1"  # regression loss (v1: l1, v2: giou)
    fg_iou_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5  # anchors overlapping a box this much learn it
    bg_iou_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.4  # ... and below this, background
    topk_candidates: Annotated[int, Field(gt=0)] = 1000  # best anchors per level kept before NMS
    # detections scoring less are dropped before NMS
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    # per-class NMS: boxes overlapping a better one this much (IoU) go
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    detections_per_img: Annotated[int, Field(gt=0)] = 300  # at most this many detections per image, best first


def anchor_sizes(cfg: RetinaNetSettings, levels: int) -> list[list[int]]:
    return cfg.anchor_sizes or [[x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))] for x in (32 * 2**i for i in range(levels))]


class RetinaNetDetector(OneStageDetector):
    """RetinaNet on the body's levels (the calling convention: OneStageDetector)."""

    def __init__(self, body: FeatureBody, cfg: RetinaNetSettings, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        levels = body.num_levels
        anchors = AnchorGenerator(tuple(tuple(s) for s in anchor_sizes(cfg, levels)),
                                  (tuple(cfg.aspect_ratios),) * levels)
        norm = partial(nn.GroupNorm, 32) if cfg.head_norm == "group" else None
        head = RetinaNetHead(body.out_channels, anchors.num_anchors_per_location()[0], num_classes, norm_layer=norm)
        head.regression_head._loss_type = cfg.box_loss  # torchvision's switch (its v2 builder sets "giou" so)
        preprocess = body.backbone.preprocess
        self.model = RetinaNet(
            body, num_classes, min_size=(*cfg.train_sizes, cfg.min_size), max_size=cfg.max_size,
            image_mean=list(preprocess.mean), image_std=list(preprocess.std), anchor_generator=anchors, head=head,
            score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_img,
            fg_iou_thresh=cfg.fg_iou_thresh, bg_iou_thresh=cfg.bg_iou_thresh, topk_candidates=cfg.topk_candidates)


# torchvision's RetinaNet and FCOS tensor names → these heads' (FeatureBody: backbone.body is the timm trunk, fpn
# the neck)
TORCHVISION_NAMES = (("backbone.body.", "model.backbone.backbone.body."), ("backbone.fpn.", "model.backbone.fpn."),
                     ("head.", "model.head."))


def load_torchvision_whole(model: nn.Module, state: dict, entry) -> list[str]:
    """A whole one-stage torchvision detector (RetinaNet, FCOS; DeepForest's) by torchvision's names."""
    return load_renamed(model, state, entry, TORCHVISION_NAMES)


def reuse_logit_rows(model: nn.Module, config, classes: list[str], catalog) -> dict[str, str]:
    """`model.head.reuse_classes` from `model.weights` (RetinaNet, FCOS): each anchor's class-logit rows (weights
    and bias) of the classes the pretrained detector also knows start from its rows. {class: the pretrained
    label}."""
    from cvpipe.models.class_match import cannot_reuse, class_rows, match_classes, reusable_labels

    head, weights_id = config.model.head, config.model.weights
    labels = reusable_labels(head, weights_id, catalog, "detector")
    if labels is None:
        return {}
    state = renamed(catalog.state_dict(weights_id), TORCHVISION_NAMES)
    logits = model.model.head.classification_head.cls_logits
    name = "model.head.classification_head.cls_logits"
    anchors = logits.out_channels // len(classes)
    theirs_w, theirs_b = state.get(f"{name}.weight"), state.get(f"{name}.bias")
    if theirs_w is None or theirs_w.shape[0] != anchors * len(labels) or theirs_w.shape[1:] != logits.weight.shape[1:]:
        return cannot_reuse(head, f"{weights_id}'s class logits do not fit this head's anchors")
    rows = match_classes(classes, labels, head.class_map)
    mine, source = class_rows(rows, len(classes), len(labels), anchors, background=False)
    with torch.no_grad():
        logits.weight[mine] = theirs_w[source].to(logits.weight.dtype)
        logits.bias[mine] = theirs_b[source].to(logits.bias.dtype)
    return {classes[i]: labels[k] for i, k in rows.items()}


def _neck_problems(model) -> Problems:
    head = model.head
    problems = needs_pyramid_or_none(model)
    if problems:
        return problems
    levels = pyramid_levels(model)
    if head.anchor_sizes is not None and len(head.anchor_sizes) != levels:
        problems.append((("model", "head", "anchor_sizes"),
                         f"{len(head.anchor_sizes)} levels of sizes given, but the neck gives {levels} feature levels; "
                         "give one list of sizes per level"))
    if head.anchor_sizes is not None and len({len(sizes) for sizes in head.anchor_sizes}) > 1:
        problems.append((("model", "head", "anchor_sizes"),
                         f"every level needs the same number of sizes (one head is shared by all), got {head.anchor_sizes}"))
    if head.head_norm == "group" and model.neck.name != "none" and model.neck.out_channels % 32:
        problems.append((("model", "head", "head_norm"), f"GroupNorm(32) needs model.neck.out_channels a multiple "
                         f"of 32, got {model.neck.out_channels}"))
    if head.bg_iou_thresh > head.fg_iou_thresh:
        problems.append((("model", "head", "bg_iou_thresh"), f"{head.bg_iou_thresh} is above fg_iou_thresh "
                         f"{head.fg_iou_thresh}"))
    return problems


def _build(config, backbone, num_classes: int) -> RetinaNetDetector:
    return RetinaNetDetector(build_neck(backbone, config.model.neck), config.model.head, num_classes)


register_head(HeadSpec("retinanet", RetinaNetSettings, _build, neck_problems=_neck_problems, tta_scales=True,
                       input_size=lambda head: head.min_size, load_whole=load_torchvision_whole,
                       reuse_classes=reuse_logit_rows))
