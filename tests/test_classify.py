"""Classification: metrics against a hand-computed confusion matrix, the head, and train → eval → predict on
class folders through the same engine as detection."""

import csv

import numpy as np
import pytest
import torch

from cvpipe.errors import ConfigError, DataError
from cvpipe.io.images import write_image
from cvpipe.loading import load_pipeline
from cvpipe.metrics.classification import classification_metrics
from cvpipe.models.heads import build_model
from cvpipe.pipeline import Pipeline

from .conftest import write_pipeline

PIPELINE = """
name: colours
task: classify
data: {{format: folders, root: {root}, train: train, val: val}}
augment:
  train: [{{Resize: {{height: 32, width: 32}}}}, {{HorizontalFlip: {{p: 0.5}}}}]
  eval: [{{Resize: {{height: 32, width: 32}}}}]
model:
  backbone: {{name: resnet10t, out_indices: [4]}}
  head: {{name: classifier}}
train: {{epochs: 3, batch_size: 6, lr: 0.01, warmup_iters: 0, workers: 0}}
eval: {{batch_size: 4{eval}}}
output: {{dir: {out}}}
"""
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def colour_folders(root, n_train=6, n_val=3):
    """Noisy images of three flat colours, of varying sizes, as ROOT/SPLIT/CLASS/*.png."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for name, rgb in COLOURS.items():
            for i in range(n):
                h, w = rng.integers(24, 48, 2)
                image = np.clip(np.array(rgb) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
                write_image(root / split / name / f"{i}.png", image)
    return root


def colours_pipeline(tmp_path, eval_extra=""):
    root = colour_folders(tmp_path / "colours")
    return write_pipeline(tmp_path / "colours.yaml",
                          PIPELINE.format(root=root, out=tmp_path / "runs", eval=eval_extra))


def test_metrics_hand_computed():
    classes = ["a", "b", "c"]
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    logits = torch.tensor([[3.0, 2.0, 1.0],   # a → a
                           [1.0, 3.0, 2.0],   # a → b (a second)
                           [1.0, 2.0, 3.0],   # a → c (a third)
                           [1.0, 3.0, 2.0],   # b → b
                           [3.0, 1.0, 2.0],   # b → a (b third)
                           [1.0, 2.0, 3.0]])  # c → c
    m = classification_metrics(logits, labels, classes)
    np.testing.assert_array_equal(m.confusion, [[1, 1, 1], [1, 1, 0], [0, 0, 1]])
    assert m.stats["top1"] == pytest.approx(3 / 6)
    assert m.stats["top5"] == 1.0  # three classes: top-3 always holds the label
    assert m.per_class == pytest.approx({"a": 1 / 3, "b": 1 / 2, "c": 1.0})
    assert m.stats["mean_class_accuracy"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)
    top2 = classification_metrics(logits[:, :2].contiguous(), torch.tensor([0, 0, 0, 1, 1, 1]), ["a", "b"])
    assert top2.per_class["b"] == pytest.approx(2 / 3)
    # the report's worst images: the mistakes, most confident first (softmax of 3, 2, 1 beats that of 3, 2, 1
    # only by ties: images 11, 12 and 14 are the three mistakes, each at probability e³ / (e³ + e² + e))
    mistakes = classification_metrics(logits, labels, classes, [10, 11, 12, 13, 14, 15]).mistakes
    top = float(np.exp(3) / (np.exp(3) + np.exp(2) + np.exp(1)))
    assert sorted(m[:3] for m in mistakes) == [(11, 0, 1), (12, 0, 2), (14, 1, 0)]
    assert [m[3] for m in mistakes] == pytest.approx([top] * 3)


def test_head_gives_logits_and_a_loss(tmp_path):
    model = build_model(load_pipeline(colours_pipeline(tmp_path)), 3, pretrained=False)
    images = [torch.rand(3, 32, 32) for _ in range(2)]
    model.eval()
    assert model(images).shape == (2, 3)
    model.train()
    loss = model(images, [{"label": torch.tensor(0)}, {"label": torch.tensor(2)}])
    assert set(loss) == {"loss_classifier"} and loss["loss_classifier"] > 0
    with pytest.raises(DataError, match="differ in size"):
        model([torch.rand(3, 32, 32), torch.rand(3, 40, 32)])


def test_best_metric_follows_the_task(tmp_path):
    assert load_pipeline(colours_pipeline(tmp_path)).eval.best == "top1"
    with pytest.raises(ConfigError, match="not a classify metric"):
        load_pipeline(colours_pipeline(tmp_path, ", best: AP50"))


def test_trains_evaluates_and_predicts_class_folders(tmp_path):
    pipeline = Pipeline.from_yaml(colours_pipeline(tmp_path))
    result = pipeline.fit(tensorboard=False)
    assert result.metrics.stats["top1"] == 1.0, result.metrics  # flat colours: learnt in 3 epochs
    assert {"confusion_matrix.png", "per_class_accuracy.png"} <= set(result.plots)
    assert all((result.run_dir / name).is_file() for name in result.plots)
    metrics = pipeline.evaluate(json_path=tmp_path / "eval" / "metrics.json", report=True)
    assert metrics.confusion.sum() == 9 and metrics.confusion.trace() == 9
    page = (tmp_path / "eval" / "report.html").read_text()  # --report beside --json
    assert page.count("data:image/png;base64,") == 2 and "per-class accuracy" in page
    assert "Worst val images" not in page  # every image right: nothing to show
    rows = list(csv.reader((tmp_path / "eval" / "val_predictions.csv").open()))
    assert rows[0] == ["file", "true", "predicted", "score"] and len(rows) == 10
    assert all(row[1] == row[2] for row in rows[1:])

    source = tmp_path / "colours" / "val"
    (source / "broken.png").write_bytes(b"not an image")
    report = pipeline.predict(source, tmp_path / "pred")
    assert report.processed == 9 and [name for name, _ in report.skipped] == ["broken.png"]
    rows = list(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    assert len(rows) == 9 and rows[0].keys() >= {"file", "class1", "score1", "class3", "score3"}
    for row in rows:
        assert row["class1"] == row["file"].split("/")[0]  # the folder is the true class
        assert float(row["score1"]) >= float(row["score2"]) >= float(row["score3"])


def test_faces_dataset_is_balanced_class_folders(tmp_path):
    from cvpipe.data.fetchers import fetch_dataset
    from cvpipe.data.formats import read_dataset

    root = fetch_dataset("faces", tmp_path)
    for split, per_class in (("train", 75), ("val", 25)):
        dataset = read_dataset(root, "folders", split, [])
        assert dataset.classes == ["face", "non_face"]
        assert np.bincount([r.label for r in dataset.records]).tolist() == [per_class, per_class]
    image = dataset.sample(0)["image"]
    assert image.shape == (25, 25, 3) and (image[..., 0] == image[..., 2]).all()  # grey, stored as RGB
