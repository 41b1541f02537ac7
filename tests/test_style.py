"""Gatys style transfer: Gram matrices and total variation by hand, the loss falling, and `cvpipe stylize`
writing results, side-by-sides and its CSV while skipping a corrupt file (a small random trunk keeps it fast)."""

import csv

import numpy as np
import pytest
import torch
from torch import nn

from cvpipe.engine.stylize import stylize
from cvpipe.io.images import write_image
from cvpipe.models.style import (
    VGG16_LAYERS,
    GatysLoss,
    LayerOutputs,
    gram,
    stylize_image,
    total_variation,
    vgg_layers,
)

from .conftest import train_on_one_batch, write_pipeline


def tiny_trunk(layers: dict[str, int] = VGG16_LAYERS) -> LayerOutputs:
    """A VGG-shaped stack whose ReLUs sit at the indices `layers` names (random weights)."""
    torch.manual_seed(0)
    relus = set(layers.values())
    stack = [nn.ReLU() if i in relus else nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(max(relus) + 1)]
    return LayerOutputs(nn.Sequential(*stack), layers, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_gram_matrix_hand_computed():
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # N=1, C=2, H=1, W=2
    # F Fᵀ = [[1·1+2·2, 1·3+2·4], [3·1+4·2, 3·3+4·4]] = [[5, 11], [11, 25]], divided by C·H·W = 4
    torch.testing.assert_close(gram(features), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)


def test_total_variation_hand_computed():
    image = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # a vertical edge
    assert total_variation(image).item() == pytest.approx(0.0 + 1.0)  # no vertical change, full horizontal change


@pytest.mark.parametrize("arch", ["torchvision.vgg16.features", "torchvision.vgg19"])
def test_layer_indices_name_the_right_relus(arch):
    from cvpipe.models.weights import build_arch

    trunk = list(build_arch(arch, num_classes=0).features if not arch.endswith("features") else build_arch(arch))
    for name, index in vgg_layers(arch).items():
        block, conv = (int(n) for n in name.removeprefix("relu").split("_"))
        before = trunk[: index + 1]
        assert isinstance(trunk[index], nn.ReLU), name
        assert sum(isinstance(m, nn.MaxPool2d) for m in before) == block - 1, name
        last_pool = max([i for i, m in enumerate(before) if isinstance(m, nn.MaxPool2d)], default=-1)
        assert sum(isinstance(m, nn.Conv2d) for m in before[last_pool + 1:]) == conv, name


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


STYLE_PIPELINE = """
name: tiny_style
task: stylize
data: {{format: images, root: {root}, train: train, val: val}}
augment:
  train: [{{RandomCrop: {{height: 32, width: 32}}}}]
  eval: [{{CenterCrop: {{height: 32, width: 32}}}}]
model:
  head: {{name: fast_style, style_image: {style}, style_size: 48, channels: 8, residual_blocks: 1}}
train: {{epochs: 2, batch_size: 2, lr: 0.001, optimizer: adamw, warmup_iters: 0, workers: 0, channels_last: false}}
eval: {{batch_size: 2}}
output: {{dir: {out}}}
"""


def test_transform_net_keeps_the_size_and_range():
    from cvpipe.models.heads.fast_style import TransformNet

    out = TransformNet(8, 1)(torch.rand(2, 3, 37, 50))
    assert out.shape == (2, 3, 37, 50) and out.min() >= 0 and out.max() <= 1


def test_fast_style_loss_falls_and_keeps_the_loss_network_out_of_its_state(tmp_path):
    from cvpipe.models.heads.fast_style import FastStyle, FastStyleHead

    rng = np.random.default_rng(0)
    write_image(tmp_path / "style.png", rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    cfg = FastStyleHead(name="fast_style", style_image=tmp_path / "style.png", style_size=48, channels=8,
                        residual_blocks=1, style_weight=1e3)
    torch.manual_seed(0)
    model = FastStyle(cfg, tiny_trunk()).train()
    assert all(k.startswith("net.") for k in model.state_dict())
    images = [torch.rand(3, 32, 32) for _ in range(2)]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, _ = train_on_one_batch(model, images, [{}, {}], optimizer, 25)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.assets
def test_fast_style_trains_and_stylizes_a_folder(tmp_path):
    from cvpipe.pipeline import Pipeline

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            write_image(tmp_path / "content" / split / f"{i}.png", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    write_image(tmp_path / "style.png", rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    text = STYLE_PIPELINE.format(root=tmp_path / "content", style=tmp_path / "style.png", out=tmp_path / "runs")
    pipeline = Pipeline.from_yaml(write_pipeline(tmp_path / "style.yaml", text))
    result = pipeline.fit(tensorboard=False)
    assert set(result.metrics.stats) == {"perceptual_loss", "content_loss", "style_loss", "input_style_loss"}
    assert pipeline.config.eval.best == "perceptual_loss"  # lower is better: best.pt is the lowest
    best = torch.load(result.best, weights_only=True)["best"]
    assert best == min(row["perceptual_loss"] for row in result.history if "perceptual_loss" in row) or best == \
        pytest.approx(min(row["perceptual_loss"] for row in result.history if "perceptual_loss" in row), rel=1e-4)
    report = pipeline.predict(tmp_path / "content" / "val", tmp_path / "pred")
    assert report.processed == 2
    assert sorted(p.name for p in (tmp_path / "pred" / "stylized").glob("*.png")) == [
        "0.png", "0_side_by_side.png", "1.png", "1_side_by_side.png"]
    video = pipeline.video(str(tmp_path / "content" / "val"), tmp_path / "video" / "styled.mp4", folder_fps=5)
    assert video.frames == 2 and (tmp_path / "video" / "styled.mp4").stat().st_size > 0  # the same `cvpipe video`
