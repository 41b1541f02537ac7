"""Instance segmentation (task `instance`, head `mask_rcnn`): instance-mask PNG folders, masks carried through the
augmentation with their boxes, Mask R-CNN's outputs, COCO segm + bbox metrics equal to pycocotools on the files
`eval` writes, RLE results from predict, mask overlays on video with track ids, ONNX export with masks."""

from __future__ import annotations

import copy
import csv
import json
import shutil

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cvpipe.data.formats import read_dataset
from cvpipe.data.samples import InstanceSamples
from cvpipe.errors import ConfigError
from cvpipe.io.images import write_image
from cvpipe.loading import load_pipeline
from cvpipe.metrics.coco import evaluate_coco
from cvpipe.models.heads import build_model
from cvpipe.pipeline import Pipeline

from .conftest import shapes_pipeline_file, write_pipeline

MASK_RCNN = """
name: shapes_instances
task: instance
data: {{format: coco, root: {root}, train: train, val: val, classes: [square, disc]}}
augment: {{train: [{{HorizontalFlip: {{p: 0.5}}}}]}}
model:
  backbone: {{name: mobilenetv2_050, out_indices: [3, 4]}}
  neck: {{name: fpn, out_channels: 32}}
  head: {{name: mask_rcnn, anchor_sizes: [[16, 24], [32, 48]], min_size: 96, max_size: 128, roi_batch_size: 32,
          rpn_pre_nms_top_n: 100, rpn_post_nms_top_n: 50, mask_layers: 2, mask_dim: 16{extra}}}
train: {{epochs: 2, batch_size: 2, lr: 0.01, warmup_iters: 2, workers: 0}}
eval: {{batch_size: 2}}
output: {{dir: {out}}}
"""


def mask_rcnn_pipeline(tmp_path, extra: str = ", score_thresh: 0.0"):
    return shapes_pipeline_file(tmp_path, MASK_RCNN, "instances.yaml", extra=extra)


def _instance_folder(tmp_path, classes: int = 1):
    """ROOT/train/images + instances (16-bit: ids 3 and 300) and, with 2 classes, classes/."""
    root = tmp_path / "inst"
    write_image(root / "train" / "images" / "a.png", np.full((40, 50, 3), 90, np.uint8))
    instances = np.zeros((40, 50), np.uint16)
    instances[5:15, 10:30] = 3
    instances[20:35, 2:9] = 300
    (root / "train" / "instances").mkdir(parents=True)
    cv2.imwrite(str(root / "train" / "instances" / "a.png"), instances)
    if classes > 1:
        class_map = np.zeros((40, 50), np.uint8)
        class_map[instances == 300] = 1
        class_map[20, 2] = 0  # one stray pixel: the majority decides
        (root / "train" / "classes").mkdir()
        cv2.imwrite(str(root / "train" / "classes" / "a.png"), class_map)
    return root, instances


def test_instance_mask_pngs_read_as_boxes_labels_and_rle(tmp_path):
    root, instances = _instance_folder(tmp_path, classes=2)
    dataset = read_dataset(root, "instance_masks", "train", ["cell", "debris"])
    assert not dataset.problems
    (record,) = dataset.records
    assert record.boxes.tolist() == [[10, 5, 30, 15], [2, 20, 9, 35]]  # pixel edges, ids in increasing order
    assert record.labels.tolist() == [0, 1]
    masks = dataset.sample(0)["masks"]
    assert (masks[0] == (instances == 3)).all() and (masks[1] == (instances == 300)).all()


def test_instance_mask_folder_problems_name_the_file(tmp_path):
    root, _ = _instance_folder(tmp_path, classes=1)
    write_image(root / "train" / "images" / "b.png", np.zeros((8, 8, 3), np.uint8))  # no instance PNG
    dataset = read_dataset(root, "instance_masks", "train", ["cell"])
    assert len(dataset.records) == 1
    (problem,) = dataset.problems
    assert problem.kind == "missing mask" and "b.png" in str(problem)
    with pytest.raises(Exception, match="classes/NAME.png"):
        read_dataset(root, "instance_masks", "train", ["cell", "debris"])


def test_masks_follow_their_boxes_and_one_pushed_out_is_dropped_with_it(tmp_path):
    root, instances = _instance_folder(tmp_path)
    dataset = read_dataset(root, "instance_masks", "train", ["cell"])
    flip = A.Compose([A.HorizontalFlip(p=1)], bbox_params=A.BboxParams("pascal_voc", label_fields=["labels", "indices"]))
    image, target = InstanceSamples(dataset, flip)[0]
    assert target["masks"].shape == (2, 40, 50) and target["masks"].dtype == torch.uint8
    assert (target["masks"][0].numpy() == (instances[:, ::-1] == 3)).all()
    assert target["boxes"].tolist() == [[20, 5, 40, 15], [41, 20, 48, 35]]
    crop = A.Compose([A.Crop(x_min=12, y_min=0, x_max=50, y_max=40)],
                     bbox_params=A.BboxParams("pascal_voc", label_fields=["labels", "indices"], min_visibility=0.3))
    _, target = InstanceSamples(dataset, crop)[0]
    assert len(target["masks"]) == len(target["boxes"]) == len(target["labels"]) == 1  # the x 2..9 one left the crop
    assert target["boxes"].tolist() == [[0, 5, 18, 15]]  # re-drawn tight around the cropped mask


def test_mask_rcnn_trains_on_masks_and_returns_one_per_box(tmp_path):
    config = load_pipeline(mask_rcnn_pipeline(tmp_path))
    torch.manual_seed(0)
    model = build_model(config, 2, pretrained=False)
    masks = torch.zeros(1, 96, 112, dtype=torch.uint8)
    masks[0, 20:50, 30:70] = 1
    target = {"boxes": torch.tensor([[30.0, 20, 70, 50]]), "labels": torch.tensor([1]), "masks": masks}
    losses = model.train()([torch.rand(3, 96, 112)], [target])
    assert {"loss_mask", "loss_classifier", "loss_box_reg", "loss_objectness"} <= set(losses)
    (out,) = model.eval()([torch.rand(3, 96, 112)])
    assert out["masks"].shape == (len(out["boxes"]), 1, 96, 112)
    assert 0 <= out["masks"].min() and out["masks"].max() <= 1
    head = model.model.roi_heads
    assert head.mask_roi_pool.output_size == (14, 14)  # RoIAlign 14×14 → transposed convolution → 28×28 per class
    assert isinstance(head.mask_predictor.conv5_mask, torch.nn.ConvTranspose2d)
    assert head.mask_predictor.mask_fcn_logits.out_channels == 3  # background + 2 classes


def test_segm_metrics_equal_pycocotools_by_hand():
    """Two images, three ground-truth masks, a crowd region; results that hit, miss and half-hit."""
    def rle(m):
        r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        return {"size": r["size"], "counts": r["counts"].decode()}

    def box(x0, y0, x1, y1, size=(60, 60)):
        m = np.zeros(size, np.uint8)
        m[y0:y1, x0:x1] = 1
        return m

    gts = [(1, box(5, 5, 25, 25), 0), (1, box(30, 30, 55, 50), 0), (2, box(10, 10, 40, 30), 0), (2, box(0, 40, 60, 60), 1)]
    gt = {"images": [{"id": i, "width": 60, "height": 60} for i in (1, 2)], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": k + 1, "image_id": i, "category_id": 1, "segmentation": rle(m), "area": int(m.sum()),
                           "bbox": [0, 0, 1, 1], "iscrowd": crowd} for k, (i, m, crowd) in enumerate(gts)]}
    results = [{"image_id": 1, "category_id": 1, "segmentation": rle(box(5, 5, 25, 25)), "score": 0.9},
               {"image_id": 1, "category_id": 1, "segmentation": rle(box(30, 30, 45, 50)), "score": 0.8},  # IoU 0.6
               {"image_id": 2, "category_id": 1, "segmentation": rle(box(12, 10, 40, 30)), "score": 0.7},
               {"image_id": 2, "category_id": 1, "segmentation": rle(box(5, 45, 20, 55)), "score": 0.95},  # in crowd
               {"image_id": 2, "category_id": 1, "segmentation": rle(box(45, 0, 60, 10)), "score": 0.6}]  # a miss
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    reference = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "segm")
    reference.evaluate(), reference.accumulate(), reference.summarize()
    for evaluator in ("pycocotools", "faster"):
        metrics = evaluate_coco(copy.deepcopy(gt), copy.deepcopy(results), ["a"], evaluator=evaluator, iou_type="segm")
        assert list(metrics.stats.values()) == pytest.approx(list(reference.stats), abs=1e-9)
    assert reference.stats[1] == pytest.approx(1.0)  # every non-crowd mask found above IoU 0.5 before the miss


def test_train_eval_predict_end_to_end_and_eval_equals_pycocotools_on_its_files(tmp_path):
    pipeline = Pipeline.from_yaml(mask_rcnn_pipeline(tmp_path))
    result = pipeline.fit(tensorboard=False)
    assert {"AP", "AP50", "box_AP", "box_AP50"} <= set(result.metrics.stats)
    assert {"pr_curve.png", "per_class_ap.png", "box_pr_curve.png"} <= {p.split(" ")[0] for p in result.plots}
    metrics = pipeline.evaluate(result.last, json_path=tmp_path / "eval" / "metrics.json")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["AP50"] == pytest.approx(metrics.stats["AP50"])
    assert set(written["per_class"]["square"]) == {"AP", "AP50", "box_AP", "box_AP50", "areas"}
    coco = COCO(str(tmp_path / "eval" / "val_annotations.json"))
    for iou_type, results, prefix in (("segm", "val_segmentations.json", ""), ("bbox", "val_detections.json", "box_")):
        found = json.loads((tmp_path / "eval" / results).read_text())
        assert found, "an untrained-enough model still finds something at score_thresh 0"
        reference = COCOeval(coco, coco.loadRes(str(tmp_path / "eval" / results)), iou_type)
        reference.evaluate(), reference.accumulate(), reference.summarize()
        ours = [metrics.stats[prefix + name] for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10",
                                                         "AR100", "ARs", "ARm", "ARl")]
        assert ours == pytest.approx(list(reference.stats), abs=1e-6)

    source = tmp_path / "to_predict"
    shutil.copytree(tmp_path / "src" / "val", source)
    (source / "broken.png").write_bytes(b"\x89PNG not really")
    report = pipeline.predict(source, tmp_path / "pred", conf=0.0)
    assert report.processed == 4 and report.counted > 0
    assert [name for name, _ in report.skipped] == ["broken.png"]
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert len(results) == report.counted
    first = results[0]
    mask = mask_utils.decode({**first["segmentation"], "counts": first["segmentation"]["counts"].encode()})
    assert mask.shape == (96, 112)
    rows = list(csv.DictReader((tmp_path / "pred" / "detections.csv").open()))
    assert len(rows) == len(results) and int(rows[0]["mask_area"]) == int(mask.sum())
    per_image = list(csv.DictReader((tmp_path / "pred" / "instances.csv").open()))
    assert len(per_image) == 4 and sum(int(r["instances"]) for r in per_image) == len(results)
    assert len(list((tmp_path / "pred" / "images").glob("*.png"))) == 4
    again = pipeline.predict(source, tmp_path / "pred", conf=0.0, resume=True)
    assert again.processed == 0 and again.resumed == 5  # the skipped file is settled too
    assert json.loads((tmp_path / "pred" / "results.json").read_text()) == results


def test_video_draws_masks_with_track_ids(tmp_path):
    pipeline = Pipeline.from_yaml(mask_rcnn_pipeline(tmp_path))
    weights = pipeline.fit(tensorboard=False).last
    frames = tmp_path / "frames"
    for i in range(4):
        image = np.full((96, 112, 3), 40, np.uint8)
        cv2.rectangle(image, (20 + 3 * i, 20), (60 + 3 * i, 60), (230, 230, 230), -1)
        write_image(frames / f"{i:03d}.png", image)
    pipeline.config.video.track = True
    report = pipeline.video(str(frames), tmp_path / "out.mp4", weights=weights, conf=0.0)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and report.frames == 4
    assert any(line["track_id"] for line in lines)
    for line in lines:
        assert len(line["mask_areas"]) == len(line["boxes"]) == len(line["track_id"])


class FixedDetections(torch.nn.Module):
    """Stands in for a detector in eval mode: the same two instances on every frame."""

    fixed_size = None
    region_proposals = None

    def forward(self, images):
        masks = torch.zeros(2, 1, *images[0].shape[-2:])
        masks[0, 0, 40:60, 50:90] = 0.8
        masks[1, 0, 10:30, 10:30] = 0.9
        return [{"boxes": torch.tensor([[50.0, 40, 90, 60], [10, 10, 30, 30]]), "scores": torch.tensor([0.05, 0.9]),
                 "labels": torch.tensor([1, 0]), "masks": masks}]


def test_a_tracked_instance_keeps_its_own_mask_in_its_track_colour(tmp_path):
    from cvpipe.ops.tracking import Tracker
    from cvpipe.tasks import get_task
    from cvpipe.tasks.base import FrameJob
    from cvpipe.viz.draw import palette

    config = load_pipeline(mask_rcnn_pipeline(tmp_path))
    task = get_task("instance")
    job = FrameJob(config, torch.device("cpu"), ["square", "disc"], 0.5, Tracker(conf=0.5, fps=25))
    image = np.zeros((80, 100, 3), np.uint8)
    for _ in range(2):  # ByteTrack confirms a new track on its second frame
        picture, record = task.frame(FixedDetections(), image, torch.from_numpy(image).permute(2, 0, 1), job)
    assert record["track_id"] == [1] and record["boxes"] == [[10.0, 10.0, 30.0, 30.0]]  # the 0.05 one is below 0.1
    assert record["mask_areas"] == [400]
    tint = (0.45 * np.array(palette(1), np.float32)).astype(np.uint8)
    assert (picture[15, 15] == tint).all()  # inside the mask, off the box outline and label
    assert (picture[57, 70] == 0).all()  # the dropped instance's mask is not drawn (below the kept one's label)


def test_export_with_masks_matches_pytorch_through_onnx_runtime(tmp_path):
    from cvpipe.engine.exported import OnnxModel
    from cvpipe.engine.onnx_graph import max_difference, onnx_bytes

    config = load_pipeline(mask_rcnn_pipeline(tmp_path, ", score_thresh: 0.3"))
    torch.manual_seed(0)
    model = build_model(config, 2, pretrained=False).eval()
    runtime = OnnxModel(onnx_bytes(model, config, ["square", "disc"]))
    assert runtime.task == "instance"
    image = torch.rand(3, 80, 100, generator=torch.Generator().manual_seed(3))
    ours, theirs = model([image])[0], runtime([image])[0]
    assert len(ours["scores"]) > 10 and theirs["masks"].shape == ours["masks"].shape
    assert max_difference(model, runtime, config) < 1e-3


def test_validate_refuses_what_masks_cannot_do(tmp_path):
    path = mask_rcnn_pipeline(tmp_path)
    with pytest.raises(ConfigError, match="test-time augmentation is for detection pipelines; this one is 'instance'"):
        load_pipeline(path, ["tta.enabled=true"])
    text = path.read_text().replace("[{HorizontalFlip: {p: 0.5}}]", "[{Mosaic: {p: 0.5}}]")
    with pytest.raises(ConfigError, match="Mosaic cannot carry instance masks"):
        load_pipeline(write_pipeline(tmp_path / "mosaic.yaml", text))
    with pytest.raises(ConfigError, match="head 'mask_rcnn' does not do task 'detect'.*faster_rcnn"):
        load_pipeline(path, ["task=detect"])
    with pytest.raises(ConfigError, match="tiling.merge: weighted boxes fusion has no masks to fuse; use nms"):
        load_pipeline(path, ["tiling.merge=wbf"])


def test_an_image_of_background_only_is_a_sample_and_boxes_without_masks_are_refused(tmp_path):
    from cvpipe.data.records import Dataset, Record
    from cvpipe.errors import DataError
    from cvpipe.tasks import get_task

    write_image(tmp_path / "empty.png", np.zeros((20, 30, 3), np.uint8))
    empty = Record(path=tmp_path / "empty.png", file_name="empty.png", image_id=0, width=30, height=20)
    plain = A.Compose([A.NoOp()], bbox_params=A.BboxParams("pascal_voc", label_fields=["labels", "indices"]))
    _, target = InstanceSamples(Dataset(tmp_path, "train", ["cell"], [empty]), plain)[0]
    assert target["masks"].shape == (0, 20, 30) and target["boxes"].shape == (0, 4)
    boxed = Record(path=tmp_path / "empty.png", file_name="empty.png", image_id=1, width=30, height=20,
                   boxes=np.array([[2, 2, 9, 9]], np.float32), labels=np.zeros(1, np.int64))
    config = load_pipeline(mask_rcnn_pipeline(tmp_path))
    config.data.format = "voc"
    with pytest.raises(DataError, match="gives boxes but no instance masks.*instance_masks"):
        get_task("instance").samples(config, Dataset(tmp_path, "train", ["cell"], [empty, boxed]), plain)


def test_images_larger_than_a_slice_train_on_windows_and_predict_in_slices(tmp_path):
    """tiling.size 64 on the 112×96 shapes: training windows carry their cut masks with tight boxes; predict's RLE
    masks cover the whole image and agree with the CSV's areas; eval scores the stitched masks."""
    from cvpipe.data.augment import build_augment
    from cvpipe.data.samples import WindowedInstanceSamples
    from cvpipe.tasks import get_task

    tiling = ["tiling.mode=always", "tiling.size=64", "train.epochs=1"]
    pipeline = Pipeline.from_yaml(mask_rcnn_pipeline(tmp_path), tiling)
    config = pipeline.config
    assert config.tiling.merge == "nmm"  # instance masks' default: a seam-cut mask is joined from its pieces
    dataset = read_dataset(config.data.root, "coco", "train", config.data.classes)
    samples = get_task("instance").samples(config, dataset, build_augment(config.augment, "train", seed=0), train=True)
    assert isinstance(samples, WindowedInstanceSamples) and len(samples) > len(dataset.records)
    for i in range(4):
        image, target = samples[i]
        assert image.shape[-2:] == (64, 64) and target["masks"].shape[-2:] == (64, 64)
        assert len(target["masks"]) == len(target["boxes"])
        for mask, box in zip(target["masks"], target["boxes"]):
            ys, xs = np.nonzero(mask.numpy())
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    result = pipeline.fit(tensorboard=False)
    assert {"AP", "box_AP"} <= set(result.metrics.stats)
    report = pipeline.predict(tmp_path / "src" / "val", tmp_path / "pred", conf=0.0)
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert report.counted == len(results) > 0
    rows = list(csv.DictReader((tmp_path / "pred" / "detections.csv").open()))
    for result_row, row in zip(results, rows):
        mask = mask_utils.decode({**result_row["segmentation"], "counts": result_row["segmentation"]["counts"].encode()})
        assert mask.shape == (96, 112) and int(row["mask_area"]) == int(mask.sum())
    assert len(list((tmp_path / "pred" / "images").glob("*.png"))) == 4
