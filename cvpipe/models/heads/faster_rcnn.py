"""Faster R-CNN head: torchvision's RPN, RoIAlign box head and post-processing on any backbone + neck.

Only the glue is ours: anchors and sampling from the YAML, the backbone's own normalisation, and class
indices kept 0-based outside (torchvision reserves 0 for background).
"""

from __future__ import annotations

from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from cvpipe.config import FasterRCNNHead
from cvpipe.models.heads.base import TorchvisionDetector
from cvpipe.models.necks import FeatureBody


class FasterRCNNDetector(TorchvisionDetector):
    """Faster R-CNN on any backbone + neck; images of any size (resized by min_size/max_size)."""

    def __init__(self, body: FeatureBody, cfg: FasterRCNNHead, num_classes: int):
        """`cfg` must have passed `config.head_problems` (load_pipeline and build_model check it)."""
        super().__init__()
        levels = body.num_levels
        sizes = cfg.anchor_sizes or [[32 * 2**i] for i in range(levels)]
        anchors = AnchorGenerator(sizes=tuple(tuple(s) for s in sizes),
                                  aspect_ratios=(tuple(cfg.aspect_ratios),) * levels)
        roi_align = MultiScaleRoIAlign(featmap_names=[str(i) for i in range(levels)], output_size=7,
                                       sampling_ratio=cfg.roi_sampling_ratio)
        box_head = TwoMLPHead(body.out_channels * 7 * 7, cfg.box_head_dim)
        preprocess = body.backbone.preprocess
        self.num_classes = num_classes
        self.model = FasterRCNN(
            body,
            min_size=(*cfg.train_sizes, cfg.min_size), max_size=cfg.max_size,
            image_mean=list(preprocess.mean), image_std=list(preprocess.std),
            rpn_anchor_generator=anchors, box_roi_pool=roi_align, box_head=box_head,
            box_predictor=FastRCNNPredictor(cfg.box_head_dim, num_classes + 1),
            rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n, rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n,
            rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n, rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n,
            box_batch_size_per_image=cfg.roi_batch_size,
            box_score_thresh=cfg.score_thresh, box_nms_thresh=cfg.nms_thresh,
            box_detections_per_img=cfg.detections_per_img,
        )
