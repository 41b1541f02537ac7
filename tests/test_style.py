"""Gatys style transfer: Gram matrices and total variation by hand, the loss falling, and `cvpipe stylize`
writing results, side-by-sides and its CSV while skipping a corrupt file (a small random trunk keeps it fast)."""

import csv

import numpy as np
import pytest
import torch
from torch import nn

from cvpipe.engine.stylize import stylize
from cvpipe.io.images import write_image
from cvpipe.models.style import VGG16_LAYERS, GatysLoss, LayerOutputs, gram, stylize_image, total_variation


def tiny_trunk() -> LayerOutputs:
    """A VGG-shaped stack whose ReLUs sit at the indices VGG16_LAYERS names (random weights)."""
    torch.manual_seed(0)
    relus = set(VGG16_LAYERS.values())
    layers = [nn.ReLU() if i in relus else nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(max(relus) + 1)]
    return LayerOutputs(nn.Sequential(*layers), VGG16_LAYERS, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_gram_matrix_hand_computed():
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # N=1, C=2, H=1, W=2
    # F Fᵀ = [[1·1+2·2, 1·3+2·4], [3·1+4·2, 3·3+4·4]] = [[5, 11], [11, 25]], divided by C·H·W = 4
    torch.testing.assert_close(gram(features), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)


def test_total_variation_hand_computed():
    image = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # a vertical edge
    assert total_variation(image).item() == pytest.approx(0.0 + 1.0)  # no vertical change, full horizontal change


def test_trunk_reads_the_papers_layers():
    out = tiny_trunk()(torch.rand(1, 3, 16, 16))
    assert set(out) == set(VGG16_LAYERS)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_style_loss_falls_and_pixels_stay_in_range(optimizer):
    torch.manual_seed(0)
    content, style = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24) ** 3
    loss = GatysLoss(tiny_trunk(), content, style, style_weight=1e3)
    before = loss.report(content)
    result = stylize_image(loss, content, steps=20, optimizer=optimizer, lr=0.05)
    after = loss.report(result)
    assert before.content == 0.0 and after.style < 0.5 * before.style
    assert result.min() >= 0 and result.max() <= 1 and result.shape == content.shape


def test_cli_stylizes_a_folder_and_skips_a_corrupt_file(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "content" / name, rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    (tmp_path / "content" / "broken.png").write_bytes(b"not an image")
    write_image(tmp_path / "style.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    report = stylize(tmp_path / "content", tmp_path / "style.png", tmp_path / "out", steps=5, size=32,
                     features=tiny_trunk(), device="cpu")
    assert [name for name, _ in report.skipped] == ["broken.png"]
    rows = list(csv.DictReader((tmp_path / "out" / "stylize.csv").open()))
    assert [row["file"] for row in rows] == ["a.png", "b.png"]
    assert (int(rows[0]["height"]), int(rows[0]["width"])) == (21, 32)  # long side resized to --size
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "a_side_by_side.png").is_file()
