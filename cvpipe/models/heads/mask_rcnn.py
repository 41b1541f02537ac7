"""Mask R-CNN head: Faster R-CNN (faster_rcnn.py) plus torchvision's mask branch on any backbone + neck.

The mask branch is torchvision's: RoIAlign 14×14 on the pyramid levels, `mask_layers` 3×3 convolutions
(MaskRCNNHeads), a stride-2 transposed convolution to 28×28 and a 1×1 convolution to one binary mask per class
(MaskRCNNPredictor); in eval the box's class mask is pasted into the image as a probability map.
"""

from __future__ import annotations

from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from cvpipe.config import MaskRCNNHead
from cvpipe.models.heads.base import TorchvisionDetector
from cvpipe.models.heads.faster_rcnn import faster_rcnn_parts, neck_problems
from cvpipe.models.heads.registry import HeadSpec, register_head
from cvpipe.models.necks import FeatureBody, build_neck


class MaskRCNNDetector(TorchvisionDetector):
    """`model(images)` → `[{boxes, scores, labels, masks [K, 1, H, W] probabilities}]`; trains on targets with
    `masks` (uint8 [K, H, W])."""

    def __init__(self, body: FeatureBody, cfg: MaskRCNNHead, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        levels = [str(i) for i in range(body.num_levels)]
        self.model = MaskRCNN(
            body, **faster_rcnn_parts(body, cfg, num_classes),
            mask_roi_pool=MultiScaleRoIAlign(featmap_names=levels, output_size=14,
                                             sampling_ratio=cfg.roi_sampling_ratio),
            mask_head=MaskRCNNHeads(body.out_channels, [cfg.mask_dim] * cfg.mask_layers, dilation=1),
            mask_predictor=MaskRCNNPredictor(cfg.mask_dim, cfg.mask_dim, num_classes + 1),
        )


def _build(config, backbone, num_classes: int) -> MaskRCNNDetector:
    return MaskRCNNDetector(build_neck(backbone, config.model.neck), config.model.head, num_classes)


register_head(HeadSpec("mask_rcnn", MaskRCNNHead, _build, neck_problems=neck_problems, input_size=lambda head: head.min_size))
