"""FCN: transposed convolutions as in the seeds (shape formula, Vᵀ, the worked example), the bilinear
initialisation, the model's shapes, metrics against a hand-computed confusion matrix, and the engine."""

import csv

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvpipe.errors import ConfigError
from cvpipe.io.images import write_image
from cvpipe.loading import load_pipeline
from cvpipe.metrics.segmentation import ConfusionMatrix, segmentation_metrics
from cvpipe.models.heads import build_model
from cvpipe.models.heads.fcn import upsampling
from cvpipe.pipeline import Pipeline

from .conftest import shapes_pipeline_file, train_on_one_batch, write_pipeline

PIPELINE = """
name: shapes_fcn
task: segment
data: {{format: coco, root: {root}, train: train, val: val, classes: [background, square, disc]}}
augment: {{train: [{{HorizontalFlip: {{p: 0.5}}}}]}}
model:
  backbone: {{name: mobilenetv2_050, out_indices: {levels}}}
  head: {{name: fcn, variant: {variant}}}
train: {{epochs: 2, batch_size: 2, lr: 0.01, warmup_iters: 2, workers: 0}}
eval: {{batch_size: 2}}
output: {{dir: {out}}}
"""


def fcn_pipeline(tmp_path, variant="8s", levels="[2, 3, 4]"):
    return shapes_pipeline_file(tmp_path, PIPELINE, "fcn.yaml", variant=variant, levels=levels)


def test_the_seeds_worked_example():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])[None, None]
    k = torch.tensor([[0.0, 1.0], [2.0, 3.0]])[None, None]
    # Y[i:i+h, j:j+w] += X[i, j] · K
    assert F.conv_transpose2d(x, k)[0, 0].tolist() == [[0, 0, 1], [0, 4, 6], [4, 12, 9]]


@pytest.mark.parametrize(("n", "k", "p", "s"), [(4, 3, 0, 1), (5, 4, 1, 2), (7, 16, 4, 8), (3, 64, 16, 32), (6, 5, 2, 3)])
def test_output_size_is_s_n_plus_k_minus_2p_minus_s(n, k, p, s):
    y = F.conv_transpose2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p)
    assert y.shape[-1] == s * n + k - 2 * p - s
    if k == 2 * p + s:  # the seeds' condition for exact up-sampling
        assert y.shape[-1] == s * n


def test_transposed_convolution_is_multiplication_by_v_transposed():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 3, 3)
    n, stride, padding = 5, 2, 1
    # V: the convolution as a matrix, one column per input pixel (the convolution of each unit image)
    units = torch.eye(n * n).reshape(n * n, 1, n, n)
    v = F.conv2d(units, w, stride=stride, padding=padding).reshape(n * n, -1).T  # [outputs, inputs]
    y = torch.randn(v.shape[0])
    out = F.conv_transpose2d(y.reshape(1, 1, 3, 3), w, stride=stride, padding=padding)
    assert out.shape[-1] == n  # the same hyper-parameters map the (3, 3) output back to (5, 5)
    torch.testing.assert_close(out.reshape(-1), v.T @ y)


def test_transposed_convolution_is_a_convolution_of_the_dilated_padded_input_with_the_flipped_kernel():
    torch.manual_seed(1)
    x, w = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    k, p, s = 4, 1, 2
    dilated = torch.zeros(1, 1, s * 4 - (s - 1), s * 4 - (s - 1))
    dilated[..., ::s, ::s] = x  # s − 1 zeros between rows and columns
    same = F.conv2d(F.pad(dilated, [k - p - 1] * 4), w.flip(-1, -2))
    torch.testing.assert_close(same, F.conv_transpose2d(x, w, stride=s, padding=p))


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_initialisation_reproduces_bilinear_upsampling(factor):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 6, 5)
    layer = upsampling(3, factor, learn=True)
    ours = layer(x)
    reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == reference.shape == (1, 3, 6 * factor, 5 * factor)
    inner = slice(factor, -factor)  # the borders differ: zero padding there, edge replication in interpolate
    torch.testing.assert_close(ours[..., inner, inner], reference[..., inner, inner])
    assert layer.weight.requires_grad and not upsampling(3, factor, learn=False).weight.requires_grad


@pytest.mark.parametrize(("variant", "levels"), [("32s", "[4]"), ("16s", "[3, 4]"), ("8s", "[2, 3, 4]")])
def test_logits_come_back_at_the_input_size(tmp_path, variant, levels):
    model = build_model(load_pipeline(fcn_pipeline(tmp_path, variant, levels)), 3, pretrained=False).eval()
    assert len(model.fuse) == len(model.strides) - 1
    with torch.no_grad():
        assert model([torch.rand(3, 100, 130)]).shape == (1, 3, 100, 130)  # padded to 32s, cropped back


def test_loss_falls_on_one_batch(tmp_path):
    torch.manual_seed(0)
    model = build_model(load_pipeline(fcn_pipeline(tmp_path)), 3, pretrained=False).train()
    images = [torch.rand(3, 64, 64) * 0.2 for _ in range(2)]
    masks = [torch.zeros(64, 64, dtype=torch.long) for _ in range(2)]
    images[0][:, 8:40, 8:40] += 0.7
    masks[0][8:40, 8:40] = 1
    images[1][:, 20:60, 10:30] += 0.5
    masks[1][20:60, 10:30] = 2
    masks[1][0, :] = 255  # ignored
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses, _ = train_on_one_batch(model, images, [{"mask": m} for m in masks], optimizer, 30)
    assert losses[-1] < 0.3 * losses[0], losses


def test_variant_and_levels_must_agree(tmp_path):
    with pytest.raises(ConfigError, match="fcn-8s fuses 3"):
        load_pipeline(fcn_pipeline(tmp_path, "8s", "[3, 4]"))


def test_metrics_hand_computed():
    confusion = ConfusionMatrix(2, ignore_index=255)
    target = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 255, 255])
    predicted = torch.tensor([0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 0, 1])
    confusion.update(predicted, target)
    np.testing.assert_array_equal(confusion.matrix(), [[3, 1], [2, 4]])  # the ignored pixels are not counted
    m = segmentation_metrics(confusion.matrix(), ["bg", "fg"])
    assert m.stats["pixel_accuracy"] == pytest.approx(7 / 10)
    assert m.stats["mean_class_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert m.per_class == pytest.approx({"bg": 3 / (4 + 5 - 3), "fg": 4 / (6 + 5 - 4)})
    assert m.stats["mIoU"] == pytest.approx((0.5 + 4 / 7) / 2)
    assert m.stats["fwIoU"] == pytest.approx(0.4 * 0.5 + 0.6 * 4 / 7)


def test_trains_evaluates_and_predicts_instance_masks_as_semantic(tmp_path):
    pipeline = Pipeline.from_yaml(fcn_pipeline(tmp_path))
    result = pipeline.fit(tensorboard=False)
    stats = result.metrics.stats
    assert set(stats) == {"mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU"}
    assert all(0.0 <= v <= 1.0 for v in stats.values())
    assert {"confusion_matrix.png", "per_class_iou.png"} <= set(result.plots)
    metrics = pipeline.evaluate(result.last, report=tmp_path / "report.html")
    assert metrics.stats == pytest.approx(stats, abs=1e-6)  # last.pt: the last evaluation
    # the report's worst images: each val image's own mean IoU, lowest first, under mIoU's own value range
    scores = [w[0] for w in metrics.worst]
    assert len(scores) == 4 and scores == sorted(scores) and all(0 <= s <= 1 for s in scores)
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 4 and "mean IoU" in page and "per-class IoU" in page
    report = pipeline.predict(tmp_path / "src" / "val", tmp_path / "pred")
    assert report.processed == 4
    masks = sorted((tmp_path / "pred" / "masks").glob("*.png"))
    assert len(masks) == 4 and len(list((tmp_path / "pred" / "overlays").glob("*.png"))) == 4
    labels = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (96, 112) and labels.max() < 3
    rows = list(csv.DictReader((tmp_path / "pred" / "segmentation.csv").open()))
    assert len(rows) == 4 and sum(float(rows[0][c]) for c in ("background", "square", "disc")) == pytest.approx(1, abs=1e-4)


def test_a_mask_with_an_unknown_class_value_is_skipped_and_named(tmp_path):
    from cvpipe.engine.data import load_split, make_loader

    root = tmp_path / "sem"
    for split in ("train", "val"):
        for i in range(2):
            write_image(root / split / "images" / f"{i}.png", np.full((32, 32, 3), 80, np.uint8))
            mask = np.zeros((32, 32), np.uint8)
            mask[8:16, 8:16] = 7 if (split, i) == ("train", 1) else 1
            write_image(root / split / "masks" / f"{i}.png", mask)
    text = (PIPELINE.replace("format: coco", "format: masks").replace("[background, square, disc]", "[background, thing]")
            .format(root=root, out=tmp_path / "runs", variant="32s", levels="[4]"))
    config = load_pipeline(write_pipeline(tmp_path / "sem.yaml", text))
    dataset, _ = load_split(config, "train")
    images, targets, skipped = next(iter(make_loader(config, dataset, "val")))
    assert len(images) == 1 and targets[0]["mask"].max() == 1
    assert len(skipped) == 1 and "1.png" in skipped[0] and "mask values [7]" in skipped[0]
