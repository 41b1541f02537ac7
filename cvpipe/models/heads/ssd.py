"""SSD head: torchvision's SSD (resize, matching, 3×3 or SSDLite predictors) with our default boxes and scores.

Ours, because torchvision's SSD cannot express them: the default-box set (n + m − 1 boxes per location in
TF's order, TF's reduced lowest level) and sigmoid scores, which TF's SSDs are trained with. Losses and
post-processing are written once for both score kinds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssd import SSDHead as TorchvisionSSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import batched_nms, clip_boxes_to_image

from cvpipe.config import ReusesClasses, backbone_levels
from cvpipe.models.heads.base import TorchvisionDetector, load_renamed, renamed
from cvpipe.models.heads.registry import HeadSpec, Problems, register_head
from cvpipe.models.necks import SSDFeatures, build_neck


class SSDHead(ReusesClasses):
    """SSD (Liu et al. 2016) on the levels of an `ssd` neck: per location n + m − 1 default boxes from n sizes
    and m aspect ratios, IoU matching, hard-negative mining, smooth-L1 + cross-entropy. `reuse_classes` from the
    class predictors of `model.weights` (a COCO SSD), level by level."""

    task: ClassVar[str] = "detect"
    name: Literal["ssd"]
    size: Annotated[int, Field(gt=0)] = 300  # images are resized to size × size
    min_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2  # box size at the first level, fraction of `size`
    max_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9  # ... at the last; levels between are spaced evenly
    # one list per level, fractions of `size`; null = [s_k, sqrt(s_k · s_k+1)] from min_scale/max_scale
    sizes: list[list[Annotated[float, Field(gt=0.0)]]] | None = None
    aspect_ratios: list[Annotated[float, Field(gt=0.0)]] = [1.0, 2.0, 0.5, 3.0, 0.3333]  # first is the main one
    reduce_first_level: bool = False  # TF's reduce_boxes_in_lowest_layer: level 0 gets (0.1, 1), (s_0, 2), (s_0, 1/2)
    # a location's default boxes in the order the weights were trained with: tf (the first size at every ratio,
    # then the other sizes at the first) | torchvision (every size at the first ratio, then the first at the others)
    box_order: Literal["tf", "torchvision"] = "tf"
    clip_default_boxes: bool = False  # default boxes no wider or taller than the image (torchvision's SSDs)
    # per level, how many of aspect_ratios it uses, e.g. [3, 5, 5, 5, 3, 3] (SSD300); null: all of them
    ratios_per_level: list[Annotated[int, Field(ge=1)]] | None = None
    # per level, the pixels between default-box centres at `size` (SSD300: [8, 16, 32, 64, 100, 300]); null: the
    # level's grid cells
    steps: list[Annotated[int, Field(gt=0)]] | None = None
    depthwise: bool = False  # SSDLite: depthwise-separable 3×3 predictors
    score: Literal["softmax", "sigmoid"] = "softmax"  # sigmoid: independent per-class scores (TF's SSDs)
    box_weights: list[Annotated[float, Field(gt=0.0)]] = [10.0, 10.0, 5.0, 5.0]  # box coder scales x, y, w, h
    iou_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5  # a default box matching a ground truth this well is positive
    neg_pos_ratio: Annotated[float, Field(gt=0.0)] = 3.0  # hard negatives kept per positive
    # detections scoring less are dropped before NMS
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    # per-class NMS: boxes overlapping a better one this much (IoU) go
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.45
    # at most this many detections per image, best first
    detections_per_img: Annotated[int, Field(gt=0)] = 200
    topk_candidates: Annotated[int, Field(gt=0)] = 400  # best boxes per class that go into NMS


def default_box_shapes(cfg: SSDHead, levels: int) -> list[list[tuple[float, float]]]:
    """Per level, the (size, aspect ratio) of each default box, sizes as fractions of the input side.

    With n sizes and m ratios a level has n + m − 1 boxes (the SSD paper's set): the first size at every ratio,
    then the other sizes at the first ratio (TF's order), or the sizes at the first ratio first (torchvision's).
    Default sizes are s_k spaced evenly from min_scale to
    max_scale and sqrt(s_k · s_k+1), with s_L = 1.
    """
    if cfg.sizes is not None:
        sizes = [list(s) for s in cfg.sizes]
    else:
        step = (cfg.max_scale - cfg.min_scale) / max(levels - 1, 1)
        scales = [cfg.min_scale + step * k for k in range(levels)] + [1.0]
        sizes = [[scales[k], math.sqrt(scales[k] * scales[k + 1])] for k in range(levels)]
    used = cfg.ratios_per_level or [len(cfg.aspect_ratios)] * len(sizes)
    shapes = []
    for s, n in zip(sizes, used):
        ratios = cfg.aspect_ratios[:n]
        if cfg.box_order == "torchvision":
            shapes.append([(size, ratios[0]) for size in s] + [(s[0], r) for r in ratios[1:]])
        else:
            shapes.append([(s[0], r) for r in ratios] + [(size, ratios[0]) for size in s[1:]])
    if cfg.reduce_first_level:
        shapes[0] = [(0.1, 1.0), (sizes[0][0], 2.0), (sizes[0][0], 0.5)]
    return shapes


class DefaultBoxes(nn.Module):
    """Default boxes (anchors) in xyxy pixels of the resized image, y-major, x, box: the order of the predictors'
    outputs. Centred on the cells: ((j + 0.5) / w, (i + 0.5) / h), or with `steps` ((j + 0.5) · step / width, ...);
    with `clip`, widths and heights capped at the image's."""

    def __init__(self, shapes: list[list[tuple[float, float]]], clip: bool = False, steps: list[int] | None = None):
        super().__init__()
        self.shapes, self.clip, self.steps = shapes, clip, steps
        self._cache: dict[tuple, torch.Tensor] = {}

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) for s in self.shapes]

    def grid(self, grid_sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> torch.Tensor:
        height, width = image_size
        boxes = []
        for k, ((h, w), shapes) in enumerate(zip(grid_sizes, self.shapes)):
            cells_y, cells_x = (height / self.steps[k], width / self.steps[k]) if self.steps else (h, w)
            cy, cx = torch.meshgrid((torch.arange(h, dtype=torch.float64) + 0.5) / cells_y,
                                    (torch.arange(w, dtype=torch.float64) + 0.5) / cells_x, indexing="ij")
            wh = torch.tensor([[s * math.sqrt(r), s / math.sqrt(r)] for s, r in shapes], dtype=torch.float64)
            if self.clip:
                wh = wh.clamp(max=1.0)
            centres = torch.stack([cx, cy], -1).reshape(-1, 1, 2)
            boxes.append(torch.cat([centres - wh / 2, centres + wh / 2], -1).reshape(-1, 4))
        scale = torch.tensor([width, height, width, height], dtype=torch.float64)
        return (torch.cat(boxes) * scale).float()

    def forward(self, images, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.for_grids(images, [tuple(f.shape[-2:]) for f in features])

    def for_grids(self, images, grid_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        image_size = tuple(images.tensors.shape[-2:])
        key = (tuple(grid_sizes), image_size, images.tensors.device)
        if key not in self._cache:
            self._cache = {key: self.grid(grid_sizes, image_size).to(images.tensors.device)}
        return [self._cache[key]] * len(images.image_sizes)


class SSDCore(nn.Module):
    """Features and predictors, `x → (box regression, class logits)`: the part an inference runtime compiles."""

    def __init__(self, ssd: SSD):
        super().__init__()
        self.backbone, self.head = ssd.backbone, ssd.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(list(self.backbone(x).values()))
        return out["bbox_regression"], out["cls_logits"]


class _SSD(SSD):
    """torchvision's SSD with our default boxes, box-coder scales, score kind and a vectorised post-processing."""

    def __init__(self, *args, sigmoid: bool, box_weights: list[float], **kwargs):
        super().__init__(*args, **kwargs)
        self.sigmoid = sigmoid
        self.box_coder = det_utils.BoxCoder(weights=tuple(box_weights))
        self.core: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None  # see use_core
        self.core_grids: list[tuple[int, int]] = []

    def use_core(self, core: Callable | None) -> None:
        """Run inference through `core` (a compiled or ONNX Runtime `SSDCore`); None = eager modules again."""
        self.core = core
        if core is not None:
            size = self.transform.fixed_size
            with torch.no_grad():
                features = self.backbone(torch.zeros(1, 3, *size, device=next(self.parameters()).device))
            self.core_grids = [tuple(f.shape[-2:]) for f in features.values()]

    def forward(self, images, targets=None):
        if self.training or self.core is None:
            return super().forward(images, targets)
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        image_list, _ = self.transform(images)
        regression, logits = self.core(image_list.tensors)
        anchors = self.anchor_generator.for_grids(image_list, self.core_grids)
        detections = self.postprocess_detections({"bbox_regression": regression, "cls_logits": logits}, anchors,
                                                 image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def class_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per default box: cross-entropy (softmax), or the summed binary cross-entropy over all classes with
        background as class 0 (sigmoid, as TF trains its SSDs)."""
        if not self.sigmoid:
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
        one_hot = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none").sum(-1)

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs) -> dict[str, torch.Tensor]:
        box_losses, class_targets = [], []
        for target, regression, image_anchors, matched in zip(targets, head_outputs["bbox_regression"], anchors,
                                                               matched_idxs):
            positive = torch.where(matched >= 0)[0]
            gt = matched[positive]
            encoded = self.box_coder.encode_single(target["boxes"][gt], image_anchors[positive])
            box_losses.append(F.smooth_l1_loss(regression[positive], encoded, reduction="sum"))
            labels = torch.zeros(len(matched), dtype=torch.int64, device=matched.device)
            labels[positive] = target["labels"][gt]
            class_targets.append(labels)
        class_targets = torch.stack(class_targets)
        loss = self.class_loss(head_outputs["cls_logits"], class_targets)
        # Hard-negative mining: per image keep the neg_pos_ratio × positives negatives with the highest loss.
        positive = class_targets > 0
        num_negative = self.neg_to_pos_ratio * positive.sum(1, keepdim=True)
        negative_loss = loss.clone()
        negative_loss[positive] = -float("inf")
        _, order = negative_loss.sort(1, descending=True)
        _, rank = order.sort(1)
        keep = positive | (rank < num_negative)
        num_positive = max(1, int(positive.sum()))
        # named like torchvision's Faster R-CNN losses, so logs and plots read the same for every head
        return {"loss_box_reg": torch.stack(box_losses).sum() / num_positive,
                "loss_classifier": (loss * keep).sum() / num_positive}

    def postprocess_detections(self, head_outputs, image_anchors, image_shapes) -> list[dict[str, torch.Tensor]]:
        logits = head_outputs["cls_logits"]
        scores = (logits.sigmoid() if self.sigmoid else logits.softmax(-1))[..., 1:]  # background dropped
        detections = []
        for regression, image_scores, anchors, shape in zip(head_outputs["bbox_regression"], scores, image_anchors,
                                                            image_shapes):
            boxes = clip_boxes_to_image(self.box_coder.decode_single(regression, anchors), shape)
            candidate = image_scores > self.score_thresh
            box_idx, label = torch.where(candidate)
            score = image_scores[box_idx, label]
            # the topk_candidates best boxes of each class go into NMS (torchvision's per-class loop, vectorised)
            order = torch.argsort(label * 2.0 - score)  # by class, then by descending score
            sorted_label = label[order]
            # where each class starts in that order: candidates per class → cumulative sum (a column sum, unlike
            # searchsorted or scatter_add, exports to an ONNX graph that OpenCV's DNN module runs too)
            counts = candidate.sum(0)
            first_of_class = (counts.cumsum(0) - counts)[sorted_label]
            rank = torch.ones_like(order).cumsum(0) - 1 - first_of_class  # not arange(len()): a traced constant
            order = order[rank < self.topk_candidates]
            box_idx, label, score = box_idx[order], label[order], score[order]
            keep = batched_nms(boxes[box_idx], score, label, self.nms_thresh)[: self.detections_per_img]
            detections.append({"boxes": boxes[box_idx[keep]], "scores": score[keep], "labels": label[keep] + 1})
        return detections


class SSDDetector(TorchvisionDetector):
    """SSD on an `ssd` neck; images of any size, resized to size × size."""

    def __init__(self, body: SSDFeatures, cfg: SSDHead, num_classes: int):
        """`cfg` must have passed this file's `_neck_problems` (load_pipeline and build_model check it)."""
        super().__init__()
        anchors = DefaultBoxes(default_box_shapes(cfg, len(body.out_channels)), clip=cfg.clip_default_boxes,
                               steps=cfg.steps)
        counts = anchors.num_anchors_per_location()
        if cfg.depthwise:
            head: nn.Module = SSDLiteHead(body.out_channels, counts, num_classes + 1,
                                          partial(nn.BatchNorm2d, eps=0.001, momentum=0.03))
        else:
            head = TorchvisionSSDHead(body.out_channels, counts, num_classes + 1)
        preprocess = body.backbone.preprocess
        self.num_classes = num_classes
        self.fixed_size = (cfg.size, cfg.size)  # (h, w) every image is resized to; `detect` does it in uint8
        self.model = _SSD(
            body, anchors, (cfg.size, cfg.size), num_classes + 1,
            image_mean=list(preprocess.mean), image_std=list(preprocess.std), head=head,
            score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_img,
            iou_thresh=cfg.iou_thresh, topk_candidates=cfg.topk_candidates,
            positive_fraction=1.0 / (1.0 + cfg.neg_pos_ratio),
            sigmoid=cfg.score == "sigmoid", box_weights=cfg.box_weights,
        )

    def inference_core(self) -> tuple[SSDCore, Callable[[Callable | None], None]]:
        """The module worth compiling for inference, and where to plug the compiled version in."""
        return SSDCore(self.model), self.model.use_core


def _build(config, backbone, num_classes: int) -> SSDDetector:
    return SSDDetector(build_neck(backbone, config.model.neck), config.model.head, num_classes)


# torchvision's SSD tensor names → this head's (SSDFeatures: backbone.body is the timm trunk, extras the neck's
# blocks; the two name the body's tensors differently, so they load in order)
TORCHVISION_NAMES = (("backbone.", "model.backbone."), ("head.", "model.head."))


def load_torchvision_whole(model: nn.Module, state: dict, entry) -> list[str]:
    """A whole SSD: torchvision's SSDlite (COCO) by torchvision's names, or one of this head's own files. A neck
    with fewer extra blocks than the file's (treecrowns_ssd: two of the COCO SSD's four) starts from the first
    ones; the file's deeper blocks, and the predictors of levels this SSD does not have, are left out."""
    return load_renamed(model, state, entry, TORCHVISION_NAMES, in_order="model.backbone.",
                        optional=("model.backbone.extras.", "model.head."))


def reuse_ssd_rows(model: SSDDetector, config, classes: list[str], catalog) -> dict[str, str]:
    """`model.head.reuse_classes` from `model.weights` (a pretrained SSD of the same shape but other classes):
    in every level's class predictor, each default box's background output and the outputs of the classes the
    weights also know start from theirs. Returns {class: the pretrained label}."""
    from cvpipe.models.class_match import cannot_reuse, class_rows, match_classes, reusable_labels

    head, weights_id = config.model.head, config.model.weights
    labels = reusable_labels(head, weights_id, catalog, "SSD")
    if labels is None:
        return {}
    state, own = renamed(catalog.state_dict(weights_id), TORCHVISION_NAMES), model.state_dict()
    k_own, k_source = len(classes) + 1, len(labels) + 1
    predictors = [name for name in own if ".classification_head." in name and name in state
                  and own[name].shape[0] % k_own == 0 and state[name].shape[0] % k_source == 0
                  and own[name].shape[0] // k_own == state[name].shape[0] // k_source
                  and own[name].shape[1:] == state[name].shape[1:] and own[name].shape != state[name].shape]
    if not predictors:
        return cannot_reuse(head, f"{weights_id}'s class predictors do not fit this SSD's levels")
    rows = match_classes(classes, labels, head.class_map)
    with torch.no_grad():
        for name in predictors:
            mine, theirs = class_rows(rows, k_own, k_source, own[name].shape[0] // k_own, background=True)
            own[name][mine] = state[name][theirs].to(own[name].dtype)  # state_dict tensors share the parameters
    return {classes[i]: labels[k] for i, k in rows.items()}


def _neck_problems(model) -> Problems:
    head, neck = model.head, model.neck
    if neck.name not in ("ssd", "ssd_vgg"):
        return [(("model", "neck", "name"), f"the ssd head needs neck ssd or ssd_vgg (extra down-sampling blocks), "
                 f"got {neck.name}")]
    problems = []
    if neck.name == "ssd_vgg" and backbone_levels(model.backbone) != 2:
        problems.append((("model", "backbone", "feature_nodes"), "neck ssd_vgg takes two backbone levels, VGG-16's "
                         "conv4_3 and conv5_3: feature_nodes [features.22, features.29]"))
    levels = 6 if neck.name == "ssd_vgg" else backbone_levels(model.backbone) + len(neck.extra_blocks)
    for field in ("ratios_per_level", "steps"):
        given = getattr(head, field)
        if given is not None and len(given) != levels:
            problems.append((("model", "head", field), f"{len(given)} levels given, but the neck gives {levels}"))
    if head.ratios_per_level and max(head.ratios_per_level) > len(head.aspect_ratios):
        problems.append((("model", "head", "ratios_per_level"), f"a level uses more ratios than aspect_ratios has "
                         f"({len(head.aspect_ratios)})"))
    if head.sizes is not None and len(head.sizes) != levels:
        problems.append((("model", "head", "sizes"),
                         f"{len(head.sizes)} levels of sizes given, but the neck gives {levels} (the backbone's "
                         "levels and the neck's extra blocks)"))
    if head.min_scale > head.max_scale:
        problems.append((("model", "head", "min_scale"), f"{head.min_scale} is above max_scale {head.max_scale}"))
    if len(head.box_weights) != 4:
        problems.append((("model", "head", "box_weights"), f"expected 4 numbers (x, y, w, h), got {head.box_weights}"))
    return problems


register_head(HeadSpec("ssd", SSDHead, _build, neck_problems=_neck_problems, compilable=True,
                       auto_backend={"cpu": "onnxruntime"}, load_whole=load_torchvision_whole,
                       reuse_classes=reuse_ssd_rows,
                       input_size=lambda head: head.size))
