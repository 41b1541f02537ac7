"""Mask R-CNN head: Faster R-CNN (faster_rcnn.py) plus torchvision's mask branch on any backbone + neck.

The mask branch is torchvision's: RoIAlign 14×14 on the pyramid levels, `mask_layers` 3×3 convolutions
(MaskRCNNHeads), a stride-2 transposed convolution to 28×28 and a 1×1 convolution to one binary mask per class
(MaskRCNNPredictor); in eval the box's class mask is pasted into the image as a probability map.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from cvpipe.models.heads.base import TorchvisionDetector
from cvpipe.models.heads.faster_rcnn import (
    FasterRCNNHead,
    faster_rcnn_parts,
    load_torchvision_whole,
    neck_problems,
    reuse_rcnn_rows,
)
from cvpipe.models.heads.registry import HeadSpec, register_head
from cvpipe.models.necks import FeatureBody, build_neck


class MaskRCNNHead(FasterRCNNHead):
    """torchvision Mask R-CNN: Faster R-CNN (every option above) plus a mask branch on RoIAlign 14×14 features,
    `mask_layers` 3×3 convolutions, a stride-2 transposed convolution to 28×28 and one binary mask per class."""

    task: ClassVar[str] = "instance"
    name: Literal["mask_rcnn"]  # type: ignore[assignment]
    mask_layers: Annotated[int, Field(ge=1)] = 4  # 3×3 convolutions of the mask FCN (the paper: 4)
    mask_dim: Annotated[int, Field(gt=0)] = 256  # their width
    mask_thresh: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5  # mask probability a pixel must reach to be in
    mask_norm: Literal["none", "batch"] = "none"  # BatchNorm after each mask convolution (torchvision's v2)
    refine_boxes: Literal[False] = False  # faster_rcnn only: the masks are drawn on the first pass's boxes


class MaskRCNNDetector(TorchvisionDetector):
    """`model(images)` → `[{boxes, scores, labels, masks [K, 1, H, W] probabilities}]`; trains on targets with
    `masks` (uint8 [K, H, W])."""

    def __init__(self, body: FeatureBody, cfg: MaskRCNNHead, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        levels = [str(i) for i in range(body.pyramid_levels)]
        self.model = MaskRCNN(
            body, **faster_rcnn_parts(body, cfg, num_classes),
            mask_roi_pool=MultiScaleRoIAlign(featmap_names=levels, output_size=14,
                                             sampling_ratio=cfg.roi_sampling_ratio),
            mask_head=MaskRCNNHeads(body.out_channels, [cfg.mask_dim] * cfg.mask_layers, dilation=1,
                                    norm_layer=nn.BatchNorm2d if cfg.mask_norm == "batch" else None),
            mask_predictor=MaskRCNNPredictor(cfg.mask_dim, cfg.mask_dim, num_classes + 1),
        )


def _build(config, backbone, num_classes: int) -> MaskRCNNDetector:
    return MaskRCNNDetector(build_neck(backbone, config.model.neck), config.model.head, num_classes)


register_head(HeadSpec("mask_rcnn", MaskRCNNHead, _build, neck_problems=neck_problems, input_size=lambda head: head.min_size,
                       load_whole=load_torchvision_whole, reuse_classes=reuse_rcnn_rows))
