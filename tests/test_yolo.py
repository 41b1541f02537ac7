"""YOLO head: task-aligned assignment on hand-computed cases, the loss, the engine end to end, the PAN neck."""

import pytest
import torch

from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.pipeline import Pipeline

from .conftest import shapes_pipeline_file, train_on_one_batch

YOLO_PIPELINE = """
name: shapes_yolo
task: detect
data: {{format: coco, root: {root}, train: train, val: val, classes: [square, disc]}}
augment: {{train: [{{HorizontalFlip: {{p: 0.5}}}}]}}
model:
  backbone: {{name: mobilenetv2_050, out_indices: [2, 3, 4]}}
  neck: {{name: pan, out_channels: 32}}
  head: {{name: yolo, size: 128, channels: 32, {extra}}}
train: {{epochs: 2, batch_size: 2, lr: 0.01, warmup_iters: 2, workers: 0}}
eval: {{batch_size: 2}}
output: {{dir: {out}}}
"""


def tiny_yolo(tmp_path, extra=""):
    return shapes_pipeline_file(tmp_path, YOLO_PIPELINE, "yolo.yaml", extra=extra)


# four cells centred at (5, 5), (15, 5), (5, 15), (15, 15); one class-0 box over the top two
CENTRES = torch.tensor([[5.0, 5.0], [15.0, 5.0], [5.0, 15.0], [15.0, 15.0]])
GT = torch.tensor([[0.0, 0.0, 20.0, 10.0]])
PREDICTED = torch.tensor([[0.0, 0.0, 20.0, 10.0],    # IoU 1 with the box
                          [10.0, 0.0, 20.0, 10.0],   # IoU 0.5
                          [0.0, 0.0, 20.0, 10.0],    # a perfect box, but its centre lies outside
                          [0.0, 10.0, 20.0, 20.0]])


def _detector(tmp_path, extra):
    return build_model(load_pipeline(tiny_yolo(tmp_path, extra)), 2, pretrained=False)


def test_assignment_hand_computed(tmp_path):
    model = _detector(tmp_path, "topk: 2, alpha: 1.0, beta: 1.0")
    scores = torch.full((4, 2), 0.5)
    foreground, gt, target = model.assign(scores, PREDICTED, GT, torch.tensor([0]), CENTRES)
    assert foreground.tolist() == [True, True, False, False]  # only cells whose centre is inside the box
    # alignment 0.5·1 and 0.5·0.5; scaled so the best cell's target is the best IoU (1): 1.0 and 0.5
    torch.testing.assert_close(target[:, 0], torch.tensor([1.0, 0.5, 0.0, 0.0]))
    assert target[:, 1].sum() == 0 and gt[:2].tolist() == [0, 0]
    foreground, _, target = _detector(tmp_path, "topk: 1").assign(scores, PREDICTED, GT, torch.tensor([0]), CENTRES)
    assert foreground.tolist() == [True, False, False, False]
    assert target[0, 0] == pytest.approx(1.0)


def test_a_cell_claimed_twice_goes_to_the_box_it_overlaps_most(tmp_path):
    model = _detector(tmp_path, "topk: 4")
    gts = torch.tensor([[0.0, 0.0, 20.0, 10.0], [0.0, 0.0, 10.0, 20.0]])  # both contain the cell at (5, 5)
    predicted = torch.tensor([[0.0, 0.0, 10.0, 18.0]] * 4)  # IoU 0.36 with the first box, 0.9 with the second
    foreground, gt, target = model.assign(torch.full((4, 2), 0.5), predicted, gts, torch.tensor([0, 1]), CENTRES)
    assert foreground[0] and gt[0] == 1
    assert target[0, 1] > 0 and target[0, 0] == 0


def test_no_ground_truth_means_all_background(tmp_path):
    model = _detector(tmp_path, "")
    foreground, _, target = model.assign(torch.rand(4, 2), PREDICTED, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                                         CENTRES)
    assert not foreground.any() and target.sum() == 0


@pytest.mark.parametrize("box_loss", ["ciou", "giou"])
def test_loss_falls_on_one_batch(tmp_path, box_loss):
    torch.manual_seed(0)
    model = _detector(tmp_path, f"box_loss: {box_loss}").train()
    images = [torch.rand(3, 96, 128) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[40.0, 20.0, 120.0, 90.0], [0.0, 0.0, 30.0, 30.0]]), "labels": torch.tensor([0, 1])},
               ]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses, loss_dict = train_on_one_batch(model, images, targets, optimizer, 40)
    assert set(loss_dict) == {"loss_classifier", "loss_box_reg"}
    assert losses[-1] < 0.5 * losses[0], losses


def test_pan_neck_keeps_every_level(tmp_path):
    model = _detector(tmp_path, "")
    levels = model.body(torch.rand(1, 3, 128, 128))
    assert [tuple(f.shape) for f in levels.values()] == [(1, 32, 16, 16), (1, 32, 8, 8), (1, 32, 4, 4)]


def test_yolo_trains_evaluates_and_predicts_through_the_engine(tmp_path):
    pipeline = Pipeline.from_yaml(tiny_yolo(tmp_path))
    result = pipeline.fit(tensorboard=False)
    assert (result.run_dir / "best.pt").is_file()
    assert 0.0 <= pipeline.evaluate().stats["AP50"] <= 1.0
    report = pipeline.predict(tmp_path / "src" / "val", tmp_path / "pred", conf=0.0)
    assert report.processed == 4 and (tmp_path / "pred" / "results.json").is_file()


def test_mosaic_tiles_four_training_images(tmp_path):
    from cvpipe.engine.data import load_split, make_loader

    config = load_pipeline(tiny_yolo(tmp_path), [
        "augment.train=[{Mosaic: {target_size: [96, 96], cell_shape: [64, 64], p: 1.0}}]", "train.batch_size=4"])
    dataset, _ = load_split(config, "train")
    images, targets, skipped = next(iter(make_loader(config, dataset, "train")))
    assert not skipped and all(tuple(image.shape) == (3, 96, 96) for image in images)
    boxes = torch.cat([t["boxes"] for t in targets])
    assert len(boxes) and (boxes >= 0).all() and (boxes <= 96).all()
    # a mosaic of four 128-px images scaled into 64-px cells holds objects from several of them
    singles = sum(len(dataset.sample(i)["boxes"]) for i in range(len(dataset))) / len(dataset)
    assert len(boxes) / len(targets) > singles * 0.8


def test_postprocess_keeps_the_right_boxes(tmp_path):
    model = _detector(tmp_path, "nms_thresh: 0.5, score_thresh: 0.2")
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [20.0, 20.0, 30.0, 30.0],
                           [40.0, 40.0, 50.0, 50.0]]])
    scores = torch.tensor([[[0.9, 0.0], [0.8, 0.7], [0.0, 0.6], [0.1, 0.1]]])  # sigmoid scores, two classes
    out = model.postprocess(scores.clamp(1e-6, 1 - 1e-6).logit(), boxes, [(64, 64)])[0]
    kept = sorted((int(label), round(float(score), 4)) for label, score in zip(out["labels"], out["scores"]))
    # class 0: 0.9 suppresses 0.8 (IoU 0.82); class 1: 0.7 and 0.6 do not overlap; 0.1s are below threshold
    assert kept == [(0, 0.9), (1, 0.6), (1, 0.7)]
