"""The retinanet and fcos heads on synthetic shapes: they learn (the loss falls on one batch), the pipeline
validates what does not fit, and whole-detector names map as torchvision's (the parities are in test_zoo.py)."""

from __future__ import annotations

import pytest
import torch

from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model

from .conftest import shapes_pipeline_file, train_on_one_batch
from .test_export import one_stage


@pytest.mark.parametrize("head", ["retinanet", "fcos"])
def test_the_loss_falls_on_one_batch(tmp_path, head):
    config = load_pipeline(shapes_pipeline_file(tmp_path, one_stage(head), f"{head}.yaml"))
    torch.manual_seed(0)
    model = build_model(config, 2, pretrained=False).train()
    images = [torch.rand(3, 96, 128) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[40.0, 20.0, 120.0, 90.0], [0.0, 0.0, 30.0, 30.0]]), "labels": torch.tensor([0, 1])}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses, loss_dict = train_on_one_batch(model, images, targets, optimizer, 30)
    assert losses[-1] < 0.5 * losses[0], losses
    assert set(loss_dict) == ({"loss_classification", "loss_bbox_regression"} if head == "retinanet"
                              else {"loss_classification", "loss_bbox_regression", "loss_bbox_ctrness"})


@pytest.mark.parametrize("override, message", [
    ("model.head.anchor_sizes=[[16]]", "1 levels of sizes given, but the neck gives 2 feature levels"),
    ("model.neck.extra_levels=p6p7", "4 feature levels"),
    ("model.head.head_norm=group", "GroupNorm(32) needs model.neck.out_channels a multiple of 32, got 48"),
    ("model.head.bg_iou_thresh=0.6", "is above fg_iou_thresh 0.5"),
])
def test_retinanet_settings_that_do_not_fit_the_neck_are_named(tmp_path, override, message):
    from cvpipe.errors import ConfigError

    path = shapes_pipeline_file(tmp_path, one_stage("retinanet"), "retinanet.yaml")
    extra = ["model.neck.out_channels=48"] if "head_norm" in override else []
    with pytest.raises(ConfigError) as e:
        load_pipeline(path, [override, *extra])
    assert message in "\n".join(map(str, [e.value, *getattr(e.value, "problems", [])])), str(e.value)
