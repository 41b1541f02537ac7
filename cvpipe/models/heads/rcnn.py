"""R-CNN head (Girshick et al., CVPR 2014): every region proposal is warped to the CNN's input and classified.

As published: ~2,000 selective-search proposals per image, each box dilated so the warp keeps `context` pixels
of surroundings, warped (bilinear, torchvision's `roi_align` on the image itself; outside the image is the
mean colour, zero after normalisation) to `warp_size` × `warp_size`, CNN features (the last backbone level,
average-pooled), one linear SVM per class, class-specific box regression, greedy NMS per class.

The paper trains in three stages (fine-tune the CNN with a softmax; SVMs on the frozen features; ridge box
regressors). Here they share `cvpipe train`'s loop as three losses: the softmax fine-tunes the CNN, while the
SVMs' hinge loss and the regressors' squared loss see detached features, so they fit the CNN's features
without shaping them, as the stages would. The SVMs' hard-negative mining keeps the paper's cache: hard
negatives found in earlier batches stay until they score below −1.2 under the current SVMs.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, roi_align

from cvpipe.config import HeadSettings, ProposalsConfig
from cvpipe.models.backbones import Backbone
from cvpipe.models.heads.base import Head
from cvpipe.models.heads.registry import NOT_EXPORTABLE, HeadSpec, Problems, register_head
from cvpipe.models.proposals import RegionProposals


class RCNNHead(HeadSettings):
    """R-CNN (Girshick et al. 2014): each proposal warped to `warp_size`, pooled CNN features, one linear SVM per
    class with hard-negative mining, class-specific box regression, NMS. Uses the last backbone level."""

    task: ClassVar[str] = "detect"
    name: Literal["rcnn"]
    proposals: ProposalsConfig = ProposalsConfig()
    warp_size: Annotated[int, Field(ge=32)] = 224  # the paper warps to 227 × 227 for AlexNet
    context: Annotated[int, Field(ge=0)] = 16  # pixels of image context around the box in the warped crop
    samples_per_image: Annotated[int, Field(gt=0)] = 64  # warped crops per training image (the paper: 128 per batch)
    positive_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.25  # of them with IoU ≥ 0.5 (fine-tuning)
    svm_negative_iou: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3  # SVM negatives overlap the class's boxes less
    hard_negatives: Annotated[int, Field(ge=0)] = 4096  # cache of hard negative features the SVMs keep training on
    regression_iou: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6  # proposals this close to a box train the regressor
    crops_per_pass: Annotated[int, Field(gt=0)] = 256  # inference: warped crops per CNN forward pass
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01  # on sigmoid(SVM margin)
    # per-class NMS: boxes overlapping a better one this much (IoU) go
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.3
    # at most this many detections per image, best first
    detections_per_img: Annotated[int, Field(gt=0)] = 100

FOREGROUND_IOU = 0.5  # fine-tuning positives, as in the paper
# The SVMs and regressors see each feature row scaled to this norm (the R-CNN code scales to a fixed mean norm
# too, rcnn_scale_features). Their squared / hinge losses then have curvature at most 2·10 whatever the
# backbone's width: lr·λ ≤ 0.4 at lr 0.02. Unscaled, BN-whitened 160-d features gave lr·λ ≈ 1.2–1.5 at lr 0.01,
# deep in momentum SGD's under-damped regime, and the CNN's fine-tuning moved the features every step, so the
# regressor rang instead of settling (its loss rose in 10 of 10 seeds on one batch; tests/test_rcnn.py).
LINEAR_FEATURE_NORM = 10 ** 0.5


class HardNegatives:
    """The SVMs' hard-negative cache: features of negatives, with the classes each is a negative for."""

    EASY = -1.2  # the paper drops cached negatives whose SVM score falls below this

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.features: torch.Tensor | None = None
        self.negative_for: torch.Tensor | None = None

    def mine(self, svm: nn.Linear, features: torch.Tensor, negative_for: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (with gradients to the SVMs) and masks of this batch's negatives plus the cached ones; the cache
        then keeps the hardest `capacity` of them that are not easy."""
        if self.features is not None:
            features = torch.cat([self.features, features])
            negative_for = torch.cat([self.negative_for, negative_for])
        scores = svm(features)
        hardness = scores.detach().masked_fill(~negative_for, float("-inf")).amax(1)
        keep = torch.nonzero(hardness > self.EASY).squeeze(1)
        keep = keep[hardness[keep].argsort(descending=True)[: self.capacity]]
        self.features, self.negative_for = features[keep], negative_for[keep]
        return scores, negative_for


class RCNNDetector(Head):
    """`model(images, targets)` → losses (targets carry `proposals`); `model(images, proposals=...)` → detections.

    Images are float RGB [0, 1] CHW of any size; proposals are in their pixels. Without proposals the model
    computes them (selective search, cached by image content). Scores are sigmoid(SVM margin).
    """

    def __init__(self, backbone: Backbone, cfg: RCNNHead, num_classes: int):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(backbone.preprocess.mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.preprocess.std).view(3, 1, 1), persistent=False)
        dim = backbone.out_channels[-1]
        self.classifier = nn.Linear(dim, num_classes + 1)  # fine-tuning: softmax over background + classes
        self.svm = nn.Linear(dim, num_classes)  # one linear SVM per class
        self.regressor = nn.Linear(dim, 4 * num_classes)  # class-specific box regression
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))  # the paper's (dx, dy, dw, dh) targets, unscaled
        self.hard_negatives = HardNegatives(cfg.hard_negatives)
        self.region_proposals = RegionProposals(cfg.proposals)

    def warp(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Crops `[N, 3, S, S]` of a normalised image: each box grown so that `context` of the S pixels per side
        show its surroundings (the paper's padding p = 16 at S = 227), then warped to S × S."""
        size = self.cfg.warp_size
        grow = size / max(size - 2 * self.cfg.context, 1)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = (boxes[:, 2:] - boxes[:, :2]) * grow / 2
        grown = torch.cat([centre - half, centre + half], 1)
        return roi_align(image[None], [grown], (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        return self.backbone(crops)[-1].mean((2, 3))

    @staticmethod
    def linear_inputs(features: torch.Tensor) -> torch.Tensor:
        """What the SVMs and regressors see: each row at norm LINEAR_FEATURE_NORM."""
        return F.normalize(features, dim=1) * LINEAR_FEATURE_NORM

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None,
                proposals: list[torch.Tensor] | None = None):
        if proposals is None:
            proposals = ([t["proposals"] for t in targets] if targets is not None
                         else self.region_proposals.for_tensors(images))
        images = [(image - self.mean) / self.std for image in images]
        if self.training:
            return self.losses(images, targets, proposals)
        return [self.detect_image(image, boxes.float()) for image, boxes in zip(images, proposals)]

    def losses(self, images: list[torch.Tensor], targets: list[dict], proposals: list[torch.Tensor]) -> dict:
        samples = [self.sample(image, t["boxes"], t["labels"], p.float())
                   for image, t, p in zip(images, targets, proposals)]
        crops, classes, positive, negative, regress, regress_class, regress_target = (
            torch.cat(parts) for parts in zip(*samples))
        features = self.features(crops)
        losses = {"loss_classifier": F.cross_entropy(self.classifier(features), classes)}
        detached = self.linear_inputs(features.detach())
        deltas = self.regressor(detached).view(len(detached), self.num_classes, 4)
        rows = torch.nonzero(regress).squeeze(1)
        losses["loss_box_reg"] = (F.mse_loss(deltas[rows, regress_class[rows]], regress_target[rows], reduction="sum")
                                  / max(len(rows), 1))
        pos_scores = self.svm(detached)
        hinge_pos = F.relu(1 - pos_scores)[positive].sum() / max(int(positive.sum()), 1)
        has_negative = negative.any(1)
        neg_scores, neg_mask = self.hard_negatives.mine(self.svm, detached[has_negative], negative[has_negative])
        hinge_neg = F.relu(1 + neg_scores)[neg_mask].sum() / max(int(neg_mask.sum()), 1)
        losses["loss_svm"] = hinge_pos + hinge_neg
        return losses

    def sample(self, image: torch.Tensor, gt: torch.Tensor, labels: torch.Tensor, proposals: torch.Tensor):
        """One image's training crops and their targets: `samples_per_image` of the ground truth and proposals,
        `positive_fraction` of them with IoU ≥ 0.5 (softmax class) and the rest background (class 0)."""
        cfg = self.cfg
        candidates = torch.cat([gt, proposals])
        is_gt = torch.arange(len(candidates), device=gt.device) < len(gt)
        iou = box_iou(candidates, gt) if len(gt) else candidates.new_zeros(len(candidates), 0)
        best, match = iou.max(1) if len(gt) else (candidates.new_zeros(len(candidates)), is_gt.long())
        foreground = torch.nonzero(best >= FOREGROUND_IOU).squeeze(1)
        background = torch.nonzero(best < FOREGROUND_IOU).squeeze(1)
        n_fg = min(len(foreground), int(cfg.samples_per_image * cfg.positive_fraction))
        n_bg = min(len(background), cfg.samples_per_image - n_fg)
        pick = torch.cat([foreground[torch.randperm(len(foreground), device=gt.device)[:n_fg]],
                          background[torch.randperm(len(background), device=gt.device)[:n_bg]]])
        boxes, best = candidates[pick], best[pick]
        matched_label = labels[match[pick]] if len(gt) else match[pick]
        classes = torch.where(best >= FOREGROUND_IOU, matched_label + 1, 0)
        # SVMs as in the paper: positives are the ground-truth boxes of the class, negatives the proposals that
        # overlap every box of the class less than svm_negative_iou, the rest is left out
        positive = torch.zeros(len(pick), self.num_classes, dtype=torch.bool, device=gt.device)
        gt_rows = torch.nonzero(is_gt[pick]).squeeze(1)
        positive[gt_rows, matched_label[gt_rows]] = True
        class_iou = torch.zeros(len(pick), self.num_classes, device=gt.device)
        if len(gt):
            class_iou.scatter_reduce_(1, labels.expand(len(pick), -1), iou[pick], reduce="amax")
        negative = class_iou < cfg.svm_negative_iou
        regress = best >= cfg.regression_iou
        target = self.box_coder.encode_single(gt[match[pick]], boxes) if len(gt) else torch.zeros_like(boxes)
        return self.warp(image, boxes), classes, positive, negative, regress, matched_label, target

    def detect_image(self, image: torch.Tensor, proposals: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, k = self.cfg, self.num_classes
        margins, boxes = [], []
        for chunk in proposals.split(cfg.crops_per_pass):
            features = self.linear_inputs(self.features(self.warp(image, chunk)))
            margins.append(self.svm(features))
            deltas = self.regressor(features).reshape(-1, 4)
            boxes.append(self.box_coder.decode_single(deltas, chunk.repeat_interleave(k, 0)))
        if not margins:
            return {"boxes": image.new_zeros(0, 4), "scores": image.new_zeros(0),
                    "labels": torch.zeros(0, dtype=torch.long, device=image.device)}
        scores = torch.cat(margins).sigmoid().reshape(-1)
        boxes = clip_boxes_to_image(torch.cat(boxes), tuple(image.shape[-2:]))
        labels = torch.arange(k, device=image.device).repeat(len(proposals))
        keep = torch.nonzero(scores > cfg.score_thresh).squeeze(1)
        keep = keep[batched_nms(boxes[keep], scores[keep], labels[keep], cfg.nms_thresh)][: cfg.detections_per_img]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def _build(config, backbone, num_classes: int) -> RCNNDetector:
    return RCNNDetector(backbone, config.model.head, num_classes)


def _neck_problems(model) -> Problems:
    if model.neck.name != "none":
        return [(("model", "neck", "name"), "rcnn pools the last backbone level of each warped crop: set neck none")]
    return []


register_head(HeadSpec("rcnn", RCNNHead, _build, neck_problems=_neck_problems, exportable=False,
                       why_not_exportable=NOT_EXPORTABLE))
