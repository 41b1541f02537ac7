"""Faster R-CNN head: torchvision's RPN, RoIAlign box head and post-processing on any backbone + neck.

Only the glue is ours: anchors and sampling from the YAML, the backbone's own normalisation, and class
indices kept 0-based outside (torchvision reserves 0 for background).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import (
    FasterRCNN,
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    RPNHead,
    TwoMLPHead,
)
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign, clip_boxes_to_image

from cvpipe.config import ReusesClasses, pyramid_levels
from cvpipe.models.heads.base import TorchvisionDetector, load_renamed, renamed
from cvpipe.models.heads.registry import HeadSpec, Problems, needs_pyramid_or_none, register_head
from cvpipe.models.necks import FeatureBody, build_neck


class FasterRCNNHead(ReusesClasses):
    """torchvision Faster R-CNN on the backbone's levels; one anchor-size tuple per FPN level."""

    task: ClassVar[str] = "detect"
    name: Literal["faster_rcnn"]
    # one list per feature level; null = torchvision's progression, 32 px at the first level doubling per level
    anchor_sizes: list[list[Annotated[int, Field(gt=0)]]] | None = None
    # anchor height ÷ width, at every size
    aspect_ratios: list[Annotated[float, Field(gt=0)]] = [0.5, 1.0, 2.0]
    min_size: Annotated[int, Field(gt=0)] = 800  # short side the images are resized to (eval; train too)
    max_size: Annotated[int, Field(gt=0)] = 1333  # ... unless the long side would exceed this
    train_sizes: list[Annotated[int, Field(gt=0)]] = []  # multi-scale training: short sides picked at random
    rpn_pre_nms_top_n: Annotated[int, Field(gt=0)] = 1000  # proposals kept per level before the RPN's NMS
    rpn_post_nms_top_n: Annotated[int, Field(gt=0)] = 1000  # ... and per image after it
    # proposals the RPN scores less (0 to 1) are dropped (torchvision's MobileNetV3 Faster R-CNNs: 0.05)
    rpn_score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    roi_batch_size: Annotated[int, Field(gt=0)] = 512  # RoIs sampled per image for the box head's loss
    roi_sampling_ratio: Annotated[int, Field(ge=0)] = 2  # RoIAlign points per bin side (0 = adaptive)
    box_head_dim: Annotated[int, Field(gt=0)] = 1024  # width of the fully connected layers after RoIAlign
    # mlp: two fully connected layers (torchvision's v1) | conv: four 3×3 convolutions with BatchNorm, then one
    # fully connected layer (torchvision's v2)
    box_head: Literal["mlp", "conv"] = "mlp"
    rpn_convs: Annotated[int, Field(ge=1)] = 1  # 3×3 convolutions of the RPN head (torchvision's v2: 2)
    # detections scoring less are dropped before NMS
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    # per-class NMS: boxes overlapping a better one this much (IoU) go
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    # at most this many detections per image, best first
    detections_per_img: Annotated[int, Field(gt=0)] = 100
    # eval: the box head runs once more on the boxes it kept; each box takes that pass's regression and the mean
    # of both passes' scores (iterative localisation): tighter boxes where the domain shifts, for a few RoIs more
    refine_boxes: bool = False


def faster_rcnn_parts(body: FeatureBody, cfg: FasterRCNNHead, num_classes: int) -> dict:
    """torchvision `FasterRCNN`'s keyword arguments from the YAML (Mask R-CNN takes the same, plus its mask
    branch); `cfg` must have passed this file's `neck_problems` (load_pipeline and build_model check it)."""
    levels = body.num_levels
    sizes = cfg.anchor_sizes or [[32 * 2**i] for i in range(levels)]
    anchors = AnchorGenerator(sizes=tuple(tuple(s) for s in sizes), aspect_ratios=(tuple(cfg.aspect_ratios),) * levels)
    roi_align = MultiScaleRoIAlign(featmap_names=[str(i) for i in range(body.pyramid_levels)], output_size=7,
                                   sampling_ratio=cfg.roi_sampling_ratio)
    if cfg.box_head == "conv":
        box_head = FastRCNNConvFCHead((body.out_channels, 7, 7), [256] * 4, [cfg.box_head_dim],
                                      norm_layer=nn.BatchNorm2d)
    else:
        box_head = TwoMLPHead(body.out_channels * 7 * 7, cfg.box_head_dim)
    preprocess = body.backbone.preprocess
    return dict(
        min_size=(*cfg.train_sizes, cfg.min_size), max_size=cfg.max_size,
        image_mean=list(preprocess.mean), image_std=list(preprocess.std),
        rpn_anchor_generator=anchors, box_roi_pool=roi_align, box_head=box_head,
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, num_classes + 1),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n, rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n, rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n,
        rpn_score_thresh=cfg.rpn_score_thresh,
        box_batch_size_per_image=cfg.roi_batch_size,
        box_score_thresh=cfg.score_thresh, box_nms_thresh=cfg.nms_thresh,
        box_detections_per_img=cfg.detections_per_img,
        # torchvision builds its one-convolution RPN head itself (after the heads above: the same random draws)
        **({"rpn_head": RPNHead(body.out_channels, anchors.num_anchors_per_location()[0], conv_depth=cfg.rpn_convs)}
           if cfg.rpn_convs != 1 else {}),
    )


class RefiningRoIHeads(RoIHeads):
    """torchvision's box branch, whose detections in eval go through the box head once more: each kept box is
    regressed again from itself (the regression of its class) and scored by the mean of both passes' class
    probabilities (Gidaris & Komodakis 2016's iterative localisation; Cascade R-CNN's "iterative BBox" baseline).
    Only the kept boxes (after NMS) are refined, so the second pass costs a few RoIs, not the RPN's thousand.
    Boxes only: Mask R-CNN's masks are drawn inside torchvision's pass, on the unrefined boxes."""

    def forward(self, features, proposals, image_shapes, targets=None):
        result, losses = super().forward(features, proposals, image_shapes, targets)
        boxes = [found["boxes"] for found in result]
        counts = [len(b) for b in boxes]
        if self.training or not sum(counts):  # (the box coder gives no class axis for no boxes)
            return result, losses
        class_logits, box_regression = self.box_predictor(self.box_head(self.box_roi_pool(features, boxes,
                                                                                           image_shapes)))
        # each box's own class, by gather: indexing with arange(len(...)) would trace its count as a constant
        labels = torch.cat([found["labels"] for found in result])[:, None]
        # (decoded without torchvision's reshape(count, -1, 4), which ONNX Runtime cannot do for no boxes)
        decoded = self.box_coder.decode_single(box_regression, torch.cat(boxes))
        refined = decoded.reshape(-1, class_logits.shape[1], 4).gather(1, labels[..., None].expand(-1, 1, 4))[:, 0]
        second = class_logits.softmax(-1).gather(1, labels)[:, 0]
        # one image (every exported graph) is not split: a traced split would freeze its count of boxes
        per_image = zip(refined.split(counts), second.split(counts)) if len(result) > 1 else [(refined, second)]
        for found, (image_boxes, scores), shape in zip(result, per_image, image_shapes):
            scores = (found["scores"] + scores) / 2
            # best first again (the mean can reorder them); ties in their order, except in an exported graph (ONNX
            # has no stable sort)
            order = (scores.argsort(descending=True) if torch.onnx.is_in_onnx_export()
                     else scores.argsort(descending=True, stable=True))
            found.update(boxes=clip_boxes_to_image(image_boxes, shape)[order], scores=scores[order],
                         labels=found["labels"][order])
        return result, losses


class FasterRCNNDetector(TorchvisionDetector):
    """Faster R-CNN on any backbone + neck; images of any size (resized by min_size/max_size)."""

    def __init__(self, body: FeatureBody, cfg: FasterRCNNHead, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.model = FasterRCNN(body, **faster_rcnn_parts(body, cfg, num_classes))
        if cfg.refine_boxes:  # same modules and state dict, one more eval step (torchvision builds its RoIHeads)
            self.model.roi_heads.__class__ = RefiningRoIHeads

    @property
    def input_resizer(self):
        return self.model.transform


# torchvision's Faster / Mask R-CNN tensor names → these heads' (FeatureBody: backbone.body is the timm trunk)
TORCHVISION_NAMES = (("backbone.body.", "model.backbone.backbone.body."), ("backbone.fpn.", "model.backbone.fpn."),
                     ("rpn.", "model.rpn."), ("roi_heads.", "model.roi_heads."))
# the class outputs of an R-CNN's heads (background first), and how many rows each class has in them
CLASS_OUTPUTS = (("model.roi_heads.box_predictor.cls_score", 1), ("model.roi_heads.box_predictor.bbox_pred", 4),
                 ("model.roi_heads.mask_predictor.mask_fcn_logits", 1))


def load_torchvision_whole(model: nn.Module, state: dict, entry) -> list[str]:
    """A whole torchvision Faster or Mask R-CNN (COCO, v1 and v2) by torchvision's names."""
    return load_renamed(model, state, entry, TORCHVISION_NAMES)


def reuse_rcnn_rows(model: nn.Module, config, classes: list[str], catalog) -> dict[str, str]:
    """`model.head.reuse_classes` from `model.weights`: the background's and shared classes' rows of the box
    classifier, the box regressor (4 rows per class) and the mask predictor start from the pretrained R-CNN's.
    {class: the pretrained label}."""
    from cvpipe.models.class_match import cannot_reuse, match_classes, reusable_labels

    head, weights_id = config.model.head, config.model.weights
    labels = reusable_labels(head, weights_id, catalog, "R-CNN")
    if labels is None:
        return {}
    state, own = renamed(catalog.state_dict(weights_id), TORCHVISION_NAMES), model.state_dict()
    outputs = [(name, per) for name, per in CLASS_OUTPUTS if f"{name}.weight" in own]
    if any(f"{name}.weight" not in state or state[f"{name}.weight"].shape[0] != (len(labels) + 1) * per
           or state[f"{name}.weight"].shape[1:] != own[f"{name}.weight"].shape[1:] for name, per in outputs):
        return cannot_reuse(head, f"{weights_id}'s class outputs do not fit this head's")
    rows = match_classes(classes, labels, head.class_map)
    pairs = [(0, 0), *((i + 1, k + 1) for i, k in rows.items())]  # background first
    with torch.no_grad():
        for name, per in outputs:
            mine = [c * per + j for c, _ in pairs for j in range(per)]
            theirs = [c * per + j for _, c in pairs for j in range(per)]
            for part in ("weight", "bias"):  # state_dict tensors share the parameters
                own[f"{name}.{part}"][mine] = state[f"{name}.{part}"][theirs].to(own[f"{name}.{part}"].dtype)
    return {classes[i]: labels[k] for i, k in rows.items()}


def _build(config, backbone, num_classes: int) -> FasterRCNNDetector:
    return FasterRCNNDetector(build_neck(backbone, config.model.neck), config.model.head, num_classes)


def neck_problems(model) -> Problems:
    """A neck without SSD's extra blocks, and one anchor-size list per feature level, all of one length (one RPN
    head is shared by every level)."""
    head, neck = model.head, model.neck
    problems = needs_pyramid_or_none(model)
    if problems or head.anchor_sizes is None:
        return problems
    levels = pyramid_levels(model)
    if len(head.anchor_sizes) != levels:
        problems.append((("model", "head", "anchor_sizes"),
                         f"{len(head.anchor_sizes)} levels of sizes given, but the neck gives {levels} feature levels "
                         f"(model.backbone.out_indices {model.backbone.out_indices}, neck {neck.name}); "
                         "give one list of sizes per level"))
    if len({len(sizes) for sizes in head.anchor_sizes}) > 1:
        problems.append((("model", "head", "anchor_sizes"),
                         f"every level needs the same number of sizes, got {head.anchor_sizes}; "
                         "e.g. [[12, 16], [24, 32], [48, 80]]"))
    return problems


register_head(HeadSpec("faster_rcnn", FasterRCNNHead, _build, neck_problems=neck_problems, tta_scales=True,
                       input_size=lambda head: head.min_size, load_whole=load_torchvision_whole,
                       reuse_classes=reuse_rcnn_rows))
