"""The retinanet and fcos heads on synthetic shapes: they learn (the loss falls on one batch), the pipeline
validates what does not fit, whole-detector names map as torchvision's (the parities are in test_zoo.py), and
evaluation, sliced prediction and video take them as every detector."""

from __future__ import annotations

import json

import pytest
import torch

from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model

from .conftest import shapes_pipeline_file, train_on_one_batch
from .test_export import one_stage
from .test_video import ffmpeg_clip, needs_ffmpeg


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


@needs_ffmpeg
@pytest.mark.parametrize("head", ["retinanet", "fcos"])
def test_eval_sliced_predict_and_video_run_on_them_as_on_every_detector(tmp_path, head):
    from cvpipe.engine.checkpoint import save_checkpoint
    from cvpipe.pipeline import Pipeline

    pipeline = Pipeline.from_yaml(shapes_pipeline_file(tmp_path, one_stage(head), f"{head}.yaml"),
                                  ["tiling.mode=always", "tiling.size=64", "video.track=true"])
    torch.manual_seed(0)
    model = build_model(pipeline.config, 2, pretrained=False)  # untrained: these paths need a model, not a good one
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "classes": pipeline.config.data.classes})
    metrics = pipeline.evaluate(tmp_path / "m.pt", json_path=tmp_path / "eval" / "metrics.json")
    assert 0.0 <= metrics.stats["AP50"] <= 1.0 and (tmp_path / "eval" / "val_detections.json").is_file()

    images = tmp_path / "shapes" / "val"
    conf = 0.005  # an untrained one-stage head scores about its prior, 1 %
    report = pipeline.predict(images, tmp_path / "pred", weights=tmp_path / "m.pt", conf=conf)
    assert report.processed == len(list(images.glob("*.png"))) and not report.skipped and report.conf == conf
    journal = [json.loads(line) for line in (tmp_path / "pred" / ".journal.jsonl").read_text().splitlines()[1:]]
    assert sum(len(entry["boxes"]) for entry in journal) > 0
    for entry in journal:  # slices merged back into whole-image boxes, every one kept at the asked confidence
        boxes = torch.tensor(entry["boxes"]).reshape(-1, 4)
        assert all(score >= conf for score in entry["scores"])
        assert bool((boxes[:, 2:] <= torch.tensor([entry["width"], entry["height"]]) + 1e-3).all())

    clip = ffmpeg_clip(tmp_path / "clip.mp4", seconds=1, fps=10, size="128x96")
    video = pipeline.video(str(clip), tmp_path / "video" / "clip.mp4", weights=tmp_path / "m.pt", conf=conf)
    assert video.frames == 10
    lines = [json.loads(line) for line in (tmp_path / "video" / "clip.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(10))
    assert all(len(line["boxes"]) == len(line["scores"]) == len(line.get("track_id", [])) for line in lines)
