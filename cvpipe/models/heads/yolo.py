"""Anchor-free YOLO head, written from the papers (YOLOX's decoupled head, TOOD's task-aligned assignment,
FCOS-style distances to the box sides), on any backbone + `pan` (or `fpn`) neck.

Each cell of each level predicts one box — softplus distances from the cell centre to the four sides, in
units of the level's stride — and independent class scores. Training assigns to every ground truth the `topk`
cells inside it with the highest alignment `score^alpha · IoU^beta` (a cell claimed twice goes to the box it
overlaps most); classification learns the alignment-normalised IoU as a soft target (binary cross-entropy),
boxes a GIoU/CIoU loss weighted by that target. torchvision supplies the resize (GeneralizedRCNNTransform),
IoU, the IoU losses and NMS; the assignment is ours (no library has it outside AGPL code).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from timm.layers import ConvNormAct
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import (
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou_loss,
    generalized_box_iou_loss,
)

from cvpipe.config import HeadSettings
from cvpipe.models.heads.base import Head
from cvpipe.models.heads.registry import HeadSpec, needs_pyramid_or_none, register_head
from cvpipe.models.necks import FeatureBody, build_neck


class YOLOHead(HeadSettings):
    """Anchor-free YOLO: each cell of each level predicts one box (distances to its four sides) and class scores
    from decoupled branches; task-aligned assignment (TOOD), IoU-family box loss, binary cross-entropy."""

    task: ClassVar[str] = "detect"
    name: Literal["yolo"]
    size: Annotated[int, Field(gt=0)] = 640  # images are resized to size × size (a multiple of the largest stride)
    channels: Annotated[int, Field(gt=0)] = 64  # width of the classification and box branches
    topk: Annotated[int, Field(gt=0)] = 10  # cells assigned per ground truth, by alignment score^alpha · IoU^beta
    # alignment score^alpha · IoU^beta: weight of the class score
    alpha: Annotated[float, Field(ge=0.0)] = 1.0
    beta: Annotated[float, Field(ge=0.0)] = 6.0  # ... and of the IoU
    box_loss: Literal["giou", "ciou"] = "ciou"  # IoU-family box loss (torchvision's)
    box_weight: Annotated[float, Field(ge=0.0)] = 7.5  # weight of the box loss
    cls_weight: Annotated[float, Field(ge=0.0)] = 0.5  # weight of the classification loss
    # detections scoring less are dropped before NMS
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    # per-class NMS: boxes overlapping a better one this much (IoU) go
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6
    # at most this many detections per image, best first
    detections_per_img: Annotated[int, Field(gt=0)] = 300
    topk_candidates: Annotated[int, Field(gt=0)] = 1000  # best (cell, class) pairs that go into NMS


class YOLODetector(Head):
    """`model(images, targets)` → loss dict in training; `model(images)` → `[{boxes, scores, labels}]` in eval.

    Images are float RGB in [0, 1], CHW, any size (resized to size × size); labels are 0-based class indices.
    """

    def __init__(self, body: FeatureBody, cfg: YOLOHead, num_classes: int):
        super().__init__()
        self.body, self.cfg, self.num_classes = body, cfg, num_classes
        self.strides = list(body.strides)
        width = cfg.channels

        def branch(out: int) -> nn.Sequential:
            return nn.Sequential(ConvNormAct(width, width, 3, act_layer=nn.SiLU),
                                 ConvNormAct(width, width, 3, act_layer=nn.SiLU), nn.Conv2d(width, out, 1))

        self.stems = nn.ModuleList(ConvNormAct(body.out_channels, width, 1, act_layer=nn.SiLU) for _ in self.strides)
        self.cls_branches = nn.ModuleList(branch(num_classes) for _ in self.strides)
        self.box_branches = nn.ModuleList(branch(4) for _ in self.strides)
        for b in self.cls_branches:  # start every score at 0.01 so the many background cells do not swamp the loss
            nn.init.constant_(b[-1].bias, -math.log(99.0))
        for b in self.box_branches:  # softplus(0.54) ≈ 1: boxes start two strides wide
            nn.init.constant_(b[-1].bias, 0.54)
        preprocess = body.backbone.preprocess
        self.fixed_size = (cfg.size, cfg.size)  # `detect` resizes on the CPU in uint8
        self.transform = GeneralizedRCNNTransform(cfg.size, cfg.size, list(preprocess.mean), list(preprocess.std),
                                                  size_divisible=max(self.strides), fixed_size=self.fixed_size)
        self._points: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.core: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None  # see inference_core

    def cell_centres(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(centres [N, 2] in pixels, stride of each [N]) for the cells of all levels, y-major per level."""
        key = (tuple(tuple(f.shape[-2:]) for f in features), features[0].device)
        if key not in self._points:
            centres, strides = [], []
            for f, stride in zip(features, self.strides):
                h, w = f.shape[-2:]
                y, x = torch.meshgrid(torch.arange(h, device=f.device), torch.arange(w, device=f.device), indexing="ij")
                centres.append((torch.stack([x, y], -1).reshape(-1, 2).float() + 0.5) * stride)
                strides.append(torch.full((h * w,), float(stride), device=f.device))
            self._points = {key: (torch.cat(centres), torch.cat(strides))}
        return self._points[key]

    def predict_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(class logits [B, N, C], boxes xyxy [B, N, 4] in pixels of `x`, cell centres [N, 2])."""
        features = list(self.body(x).values())
        centres, strides = self.cell_centres(features)
        logits, distances = [], []
        for f, stem, cls_branch, box_branch in zip(features, self.stems, self.cls_branches, self.box_branches):
            f = stem(f)
            logits.append(cls_branch(f).flatten(2).transpose(1, 2))
            distances.append(box_branch(f).flatten(2).transpose(1, 2))
        ltrb = F.softplus(torch.cat(distances, 1)) * strides[None, :, None]
        boxes = torch.cat([centres - ltrb[..., :2], centres + ltrb[..., 2:]], -1)
        return torch.cat(logits, 1), boxes, centres

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        image_list, targets = self.transform(images, targets)
        if self.training or self.core is None:
            logits, boxes, centres = self.predict_raw(image_list.tensors)
        else:
            logits, boxes = self.core(image_list.tensors)
        if self.training:
            return self.loss(logits, boxes, centres, targets)
        detections = self.postprocess(logits, boxes, image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def inference_core(self) -> tuple[nn.Module, Callable[[Callable | None], None]]:
        """The module worth compiling for inference (`x → (logits, boxes)`), and where to plug it in."""
        return YOLOCore(self), partial(setattr, self, "core")

    # ------------------------------------------------------------------------------------------- training

    @torch.no_grad()
    def assign(self, scores: torch.Tensor, boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
               centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Task-aligned assignment for one image: (foreground mask [N], assigned ground truth [N], soft class
        target [N, C]). `scores` are sigmoid scores [N, C], `boxes` the predictions [N, 4]."""
        n = len(centres)
        cls_target = scores.new_zeros(n, self.num_classes)
        if not len(gt_boxes):
            return torch.zeros(n, dtype=torch.bool, device=scores.device), torch.zeros(n, dtype=torch.long), cls_target
        x, y = centres[:, 0], centres[:, 1]
        inside = ((x[None] > gt_boxes[:, :1]) & (x[None] < gt_boxes[:, 2:3])
                  & (y[None] > gt_boxes[:, 1:2]) & (y[None] < gt_boxes[:, 3:4]))  # [M, N]
        iou = box_iou(gt_boxes, boxes).clamp(min=0) * inside
        align = scores[:, gt_labels].T.pow(self.cfg.alpha) * iou.pow(self.cfg.beta) * inside
        k = min(self.cfg.topk, n)
        top = torch.zeros_like(inside)
        top.scatter_(1, align.topk(k, dim=1).indices, True)
        positive = top & inside & (align > 0)
        # a cell claimed by several ground truths keeps the one it overlaps most
        best_gt = iou.masked_fill(~positive, -1).argmax(0)
        foreground = positive.any(0)
        positive = positive & (torch.arange(len(gt_boxes), device=iou.device)[:, None] == best_gt[None])
        # soft targets: each ground truth's alignments scaled so its best cell gets its best IoU
        pos_align = align * positive
        pos_iou = iou * positive
        norm = pos_align * (pos_iou.amax(1, keepdim=True) / (pos_align.amax(1, keepdim=True) + 1e-9))
        strength = norm.amax(0)
        cls_target[foreground, gt_labels[best_gt[foreground]]] = strength[foreground]
        return foreground, best_gt, cls_target

    def loss(self, logits: torch.Tensor, boxes: torch.Tensor, centres: torch.Tensor,
             targets: list[dict]) -> dict[str, torch.Tensor]:
        scores = logits.detach().sigmoid()
        cls_targets, box_losses, total = [], [], logits.new_zeros(())
        for image_scores, image_boxes, target in zip(scores, boxes, targets):
            foreground, gt_index, cls_target = self.assign(image_scores, image_boxes.detach(), target["boxes"],
                                                           target["labels"], centres)
            cls_targets.append(cls_target)
            if foreground.any():
                weight = cls_target[foreground].sum(-1)
                pred, gt = image_boxes[foreground], target["boxes"][gt_index[foreground]]
                iou_loss = complete_box_iou_loss if self.cfg.box_loss == "ciou" else generalized_box_iou_loss
                box_losses.append((iou_loss(pred, gt, reduction="none") * weight).sum())
            total = total + cls_target.sum()
        normaliser = total.clamp(min=1.0)
        cls_loss = F.binary_cross_entropy_with_logits(logits, torch.stack(cls_targets), reduction="sum") / normaliser
        box_loss = torch.stack(box_losses).sum() / normaliser if box_losses else boxes.sum() * 0.0
        # named like torchvision's Faster R-CNN losses, so logs and plots read the same for every head
        return {"loss_classifier": self.cfg.cls_weight * cls_loss, "loss_box_reg": self.cfg.box_weight * box_loss}

    # ------------------------------------------------------------------------------------------- inference

    def postprocess(self, logits: torch.Tensor, boxes: torch.Tensor, image_sizes) -> list[dict[str, torch.Tensor]]:
        detections = []
        for image_logits, image_boxes, size in zip(logits, boxes, image_sizes):
            scores = image_logits.sigmoid().flatten()
            keep = torch.where(scores > self.cfg.score_thresh)[0]
            # the best topk_candidates (a slice, not topk(min(k, len)): len() would be a constant in an ONNX trace)
            keep = keep[scores[keep].argsort(descending=True)[: self.cfg.topk_candidates]]
            cell, label = keep // self.num_classes, keep % self.num_classes
            cell_boxes = clip_boxes_to_image(image_boxes[cell], size)
            kept = batched_nms(cell_boxes, scores[keep], label, self.cfg.nms_thresh)[: self.cfg.detections_per_img]
            detections.append({"boxes": cell_boxes[kept], "scores": scores[keep][kept], "labels": label[kept]})
        return detections


class YOLOCore(nn.Module):
    """`x → (class logits, boxes)`: everything but resize and NMS, for an inference runtime to compile."""

    def __init__(self, detector: YOLODetector):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, boxes, _ = self.detector.predict_raw(x)
        return logits, boxes


def _build(config, backbone, num_classes: int) -> YOLODetector:
    return YOLODetector(build_neck(backbone, config.model.neck), config.model.head, num_classes)


register_head(HeadSpec("yolo", YOLOHead, _build, neck_problems=needs_pyramid_or_none, compilable=True,
                       auto_backend={"cpu": "onnxruntime"},
                       input_size=lambda head: head.size))
