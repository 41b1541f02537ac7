"""Fast R-CNN head (Girshick 2015): external region proposals, one CNN pass per image, RoI max pooling.

torchvision's RoIHeads does the sampling (IoU ≥ 0.5 foreground, a `positive_fraction` of each image's RoIs),
the multi-task loss (softmax cross-entropy + smooth-L1 box regression) and the per-class NMS; ours is the RoI
*max* pooling on one feature level (torchvision's `roi_pool`, as the paper has it, where Faster R-CNN uses
multi-level RoIAlign) and the proposals coming from selective search instead of an RPN.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import roi_pool

from cvpipe.config import HeadSettings, ProposalsConfig, backbone_levels
from cvpipe.models.heads.base import Head
from cvpipe.models.heads.registry import (
    NOT_EXPORTABLE,
    HeadSpec,
    Problems,
    needs_pyramid_or_none,
    register_head,
)
from cvpipe.models.necks import FeatureBody, build_neck
from cvpipe.models.proposals import RegionProposals


class FastRCNNHead(HeadSettings):
    """Fast R-CNN (Girshick 2015): one CNN pass per image, RoI max pooling of the proposals on one feature level,
    two fully connected layers, softmax classifier + class-specific box regression."""

    task: ClassVar[str] = "detect"
    name: Literal["fast_rcnn"]
    proposals: ProposalsConfig = ProposalsConfig()
    min_size: Annotated[int, Field(gt=0)] = 600  # short side the images are resized to (the paper's scale)
    max_size: Annotated[int, Field(gt=0)] = 1000  # ... unless the long side would exceed this
    train_sizes: list[Annotated[int, Field(gt=0)]] = []  # multi-scale training: short sides picked at random
    pool_level: Annotated[int, Field(ge=0)] = 0  # which neck level the RoIs are pooled from (0 = finest)
    pool_size: list[Annotated[int, Field(gt=0)]] = [7, 7]  # RoI max pooling bins (height, width)
    roi_batch_size: Annotated[int, Field(gt=0)] = 64  # RoIs sampled per image (the paper: 128 per 2 images)
    positive_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.25  # of them with IoU ≥ 0.5
    # width of the two fully connected layers after RoI pooling
    box_head_dim: Annotated[int, Field(gt=0)] = 1024
    # detections scoring less are dropped before NMS
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    # per-class NMS: boxes overlapping a better one this much (IoU) go
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.3
    # at most this many detections per image, best first
    detections_per_img: Annotated[int, Field(gt=0)] = 100


class LevelRoIPool(nn.Module):
    """RoI max pooling of boxes (in resized-image pixels) on one feature level of stride `stride`."""

    def __init__(self, level: int, stride: int, output_size: tuple[int, int]):
        super().__init__()
        self.level, self.stride, self.output_size = str(level), stride, output_size

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes) -> torch.Tensor:
        return roi_pool(features[self.level], boxes, self.output_size, spatial_scale=1.0 / self.stride)


class FastRCNNDetector(Head):
    """`model(images, targets)` → losses (targets carry `proposals`); `model(images, proposals=...)` → detections.

    Images are float RGB [0, 1] CHW of any size, resized by min_size/max_size; proposals are in the input
    images' pixels. Without proposals the model computes them (selective search, cached by image content).
    """

    @property
    def input_resizer(self):
        return self.transform

    def __init__(self, body: FeatureBody, cfg: FastRCNNHead, num_classes: int):
        """`cfg` must have passed this file's `_neck_problems` (load_pipeline and build_model check it)."""
        super().__init__()
        self.num_classes = num_classes
        self.region_proposals = RegionProposals(cfg.proposals)
        preprocess = body.backbone.preprocess
        # training picks a short side from the tuple at random; evaluation uses its last entry, min_size
        self.transform = GeneralizedRCNNTransform((*cfg.train_sizes, cfg.min_size), cfg.max_size,
                                                  list(preprocess.mean), list(preprocess.std))
        self.body = body
        pool_h, pool_w = cfg.pool_size
        self.roi_heads = RoIHeads(
            box_roi_pool=LevelRoIPool(cfg.pool_level, body.strides[cfg.pool_level], (pool_h, pool_w)),
            box_head=TwoMLPHead(body.out_channels * pool_h * pool_w, cfg.box_head_dim),
            box_predictor=FastRCNNPredictor(cfg.box_head_dim, num_classes + 1),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=cfg.roi_batch_size,
            positive_fraction=cfg.positive_fraction, bbox_reg_weights=None,
            score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_img,
        )

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None,
                proposals: list[torch.Tensor] | None = None):
        if proposals is None:
            proposals = ([t["proposals"] for t in targets] if targets is not None
                         else self.region_proposals.for_tensors(images))
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        if targets is not None:  # torchvision reserves label 0 for the background
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
        batch, targets = self.transform(images, targets)
        proposals = [scale_boxes(p.float(), old, new) for p, old, new in zip(proposals, original_sizes, batch.image_sizes)]
        features = self.body(batch.tensors)
        detections, losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        if self.training:
            return losses
        detections = self.transform.postprocess(detections, batch.image_sizes, original_sizes)
        return [{**d, "labels": d["labels"] - 1} for d in detections]


def scale_boxes(boxes: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Boxes (x1, y1, x2, y2) from an image of size `old` (h, w) to the same image resized to `new`."""
    sy, sx = new[0] / old[0], new[1] / old[1]
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def _build(config, backbone, num_classes: int) -> FastRCNNDetector:
    return FastRCNNDetector(build_neck(backbone, config.model.neck), config.model.head, num_classes)


def _neck_problems(model) -> Problems:
    head, neck = model.head, model.neck
    problems = needs_pyramid_or_none(model)
    if problems:
        return problems
    levels = backbone_levels(model.backbone) if neck.name in ("fpn", "pan") else 1
    if head.pool_level >= levels:
        return [(("model", "head", "pool_level"), f"{head.pool_level} is not a level of the neck's {levels} "
                 f"(0 … {levels - 1}; neck {neck.name}, model.backbone.out_indices {model.backbone.out_indices})")]
    if len(head.pool_size) != 2:
        return [(("model", "head", "pool_size"), f"expected [height, width], got {head.pool_size}")]
    return []


register_head(HeadSpec("fast_rcnn", FastRCNNHead, _build, neck_problems=_neck_problems, tta_scales=True,
                       exportable=False, why_not_exportable=NOT_EXPORTABLE, input_size=lambda head: head.min_size))
