"""Metrics: COCO mAP through pycocotools (detection)."""
