"""R-CNN and Fast R-CNN: the proposal cache, proposals carried through augmentation, warping, sampling and the
SVMs' hard-negative cache on hand-computed cases, and both heads through the engine."""

import numpy as np
import pytest
import torch
from torchvision.ops import roi_pool

from cvpipe.config import AugmentConfig, ProposalsConfig
from cvpipe.data.augment import apply_augment, build_augment
from cvpipe.errors import ConfigError
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.models.heads.fast_rcnn import LevelRoIPool, scale_boxes
from cvpipe.models.heads.rcnn import HardNegatives
from cvpipe.models.proposals import RegionProposals
from cvpipe.pipeline import Pipeline

from .conftest import shapes_pipeline_file, train_on_one_batch

PIPELINE = """
name: shapes_{head}
task: detect
data: {{format: coco, root: {root}, train: train, val: val, classes: [square, disc]}}
augment: {{train: [{{HorizontalFlip: {{p: 0.5}}}}]}}
model:
  backbone: {{name: mobilenetv2_050, out_indices: {levels}}}
  neck: {{name: {neck}, out_channels: 32}}
  head: {{name: {head}, proposals: {{max: 200, scales: [50]}}, {extra}}}
train: {{epochs: 2, batch_size: 2, lr: 0.01, warmup_iters: 2, workers: 0}}
eval: {{batch_size: 2}}
output: {{dir: {out}}}
"""
RCNN = {"head": "rcnn", "levels": "[4]", "neck": "none", "extra": "warp_size: 32, context: 2, samples_per_image: 16"}
FAST_RCNN = {"head": "fast_rcnn", "levels": "[2, 3, 4]", "neck": "fpn",
             "extra": "min_size: 96, max_size: 160, roi_batch_size: 32"}


@pytest.fixture(autouse=True)
def proposal_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CVPIPE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "proposals"


def pipeline_file(tmp_path, fields: dict, **changes):
    return shapes_pipeline_file(tmp_path, PIPELINE, f"{fields['head']}.yaml", **{**fields, **changes})


def detector(tmp_path, fields: dict, **changes):
    return build_model(load_pipeline(pipeline_file(tmp_path, fields, **changes)), 2, pretrained=False)


def two_squares() -> np.ndarray:
    image = np.full((64, 80, 3), 90, np.uint8)
    image[8:30, 10:34] = (220, 40, 40)
    image[36:60, 44:76] = (40, 60, 220)
    return image


def test_proposals_are_cached_by_image_content(proposal_cache):
    proposals = RegionProposals(ProposalsConfig(max=100))
    first = proposals(two_squares())
    files = list(proposal_cache.rglob("*.npy"))
    assert len(files) == 1 and len(first) > 0
    np.testing.assert_array_equal(np.load(files[0]), first)
    files[0].write_bytes(b"truncated")  # a damaged cache file is recomputed, not trusted
    np.testing.assert_array_equal(proposals(two_squares()), first)
    other = two_squares()
    other[0, 0] = 0
    proposals(other)
    assert len(list(proposal_cache.rglob("*.npy"))) == 2
    RegionProposals(ProposalsConfig(max=50))(two_squares())  # other settings, another cache folder
    assert len({f.parent for f in proposal_cache.rglob("*.npy")}) == 2


def test_augmentation_moves_proposals_with_the_boxes():
    sample = {"image": np.zeros((50, 100, 3), np.uint8), "boxes": np.array([[10.0, 5.0, 30.0, 25.0]]),
              "labels": np.array([1]), "proposals": np.array([[0.0, 0.0, 40.0, 50.0], [60.0, 10.0, 100.0, 20.0]])}
    cfg = AugmentConfig(train=[{"HorizontalFlip": {"p": 1.0}}], eval=[], min_visibility=0.0, min_area=0.0)
    out = apply_augment(build_augment(cfg, "train", seed=0), sample)
    np.testing.assert_allclose(out["boxes"], [[70.0, 5.0, 90.0, 25.0]])  # x → 100 − x
    assert out["labels"].tolist() == [1]
    np.testing.assert_allclose(out["proposals"], [[60.0, 0.0, 100.0, 50.0], [0.0, 10.0, 40.0, 20.0]])


def test_training_targets_carry_proposals_in_image_coordinates(tmp_path):
    from cvpipe.engine.data import load_split, make_loader

    config = load_pipeline(pipeline_file(tmp_path, FAST_RCNN))
    dataset, _ = load_split(config, "train")
    images, targets, skipped = next(iter(make_loader(config, dataset, "train")))
    for image, target in zip(images, targets):
        h, w = image.shape[-2:]
        p = target["proposals"]
        assert len(p) > 0 and (p[:, 2] <= w).all() and (p[:, 3] <= h).all() and (p[:, :2] >= 0).all()


def test_warp_crops_the_box_with_its_context(tmp_path):
    model = detector(tmp_path, RCNN, extra="warp_size: 32, context: 8")
    image = torch.zeros(1, 64, 64)
    image[:, 16:48, 16:48] = 1.0  # a bright 32-px square
    # the square's inner half, grown by 32 / (32 − 2·8) = 2×, is the square itself: the crop is all bright
    crop = model.warp(image, torch.tensor([[24.0, 24.0, 40.0, 40.0]]))
    assert crop.shape == (1, 1, 32, 32)
    torch.testing.assert_close(crop[0, 0, 1:-1, 1:-1], torch.ones(30, 30))
    # the square itself with 8 px context: a dark frame of ~8 px around a bright middle
    crop = model.warp(image, torch.tensor([[16.0, 16.0, 48.0, 48.0]]))[0, 0]
    assert crop[12:20, 12:20].min() == 1.0 and crop[:6, :].max() == 0.0 and crop[:, -6:].max() == 0.0


def test_rcnn_sampling_hand_computed(tmp_path):
    model = detector(tmp_path, RCNN, extra="warp_size: 32, context: 2, samples_per_image: 4, positive_fraction: 0.5")
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    proposals = torch.tensor([[0.0, 0.0, 20.0, 16.0],    # IoU 0.8: foreground, regressed
                              [0.0, 0.0, 20.0, 11.0],    # IoU 0.55: foreground, not regressed (< 0.6)
                              [0.0, 0.0, 20.0, 8.0],     # IoU 0.4: background, ignored by the SVMs (≥ 0.3)
                              [40.0, 40.0, 60.0, 60.0]])  # IoU 0: background, an SVM negative
    torch.manual_seed(0)
    crops, classes, positive, negative, regress, label, target = model.sample(
        torch.zeros(3, 64, 64), gt, torch.tensor([1]), proposals)
    # 2 of the 3 foreground candidates (the box itself, IoU 0.8, IoU 0.55) and both backgrounds
    assert crops.shape == (4, 3, 32, 32)
    assert classes.tolist()[:2] == [2, 2] and classes.tolist()[2:] == [0, 0]
    assert positive[:, 0].sum() == 0  # a class-1 box is no positive for class 0 ...
    assert negative[:, 0].all()  # ... and everything is a negative for class 0, which has no boxes here
    assert regress[:2].any() and not regress[2:].any()  # IoU ≥ 0.6 only
    assert sorted(negative[2:, 1].tolist()) == [False, True]  # for class 1, IoU 0.4 is left out, IoU 0 a negative
    full = model.sample(torch.zeros(3, 64, 64), gt, torch.tensor([1]), proposals[:1])  # box + IoU-0.8 proposal
    assert full[2][:, 1].tolist().count(True) == 1  # only the ground truth itself is an SVM positive
    rows = torch.nonzero(full[4]).squeeze(1)
    # regression targets: the box itself → 0; (0, 0, 20, 16) → dy = (10 − 8)/16, dh = log(20/16)
    targets = sorted(full[6][rows].tolist(), key=lambda t: abs(t[1]))
    torch.testing.assert_close(torch.tensor(targets[0]), torch.zeros(4))
    torch.testing.assert_close(torch.tensor(targets[1]), torch.tensor([0.0, 0.125, 0.0, float(np.log(1.25))]))


def test_hard_negative_cache_keeps_the_hard_and_drops_the_easy():
    svm = torch.nn.Linear(1, 1, bias=False)
    svm.weight.data.fill_(1.0)  # the score is the feature itself
    cache = HardNegatives(capacity=2)
    features = torch.tensor([[-3.0], [-1.125], [0.5], [2.0]])
    scores, mask = cache.mine(svm, features, torch.ones(4, 1, dtype=torch.bool))
    assert scores.shape == (4, 1) and mask.all()
    assert sorted(cache.features.squeeze(1).tolist()) == [0.5, 2.0]  # capacity 2: the hardest; −3 is easy
    scores, _ = cache.mine(svm, torch.tensor([[-1.0]]), torch.ones(1, 1, dtype=torch.bool))
    assert sorted(scores.squeeze(1).tolist()) == [-1.0, 0.5, 2.0]  # the cached ones are trained on again
    cache = HardNegatives(capacity=10)
    cache.mine(svm, features, torch.tensor([[True], [True], [False], [True]]))
    assert sorted(cache.features.squeeze(1).tolist()) == [-1.125, 2.0]  # 0.5 is no negative of the class


def test_fast_rcnn_pools_the_proposals_on_one_level():
    features = {"0": torch.arange(64.0).view(1, 1, 8, 8), "1": torch.zeros(1, 1, 4, 4)}
    boxes = [torch.tensor([[0.0, 0.0, 24.0, 24.0]])]  # stride 8: cells 0–3 × 0–3 (roi_pool's end is inclusive)
    pooled = LevelRoIPool(0, 8, (2, 2))(features, boxes, [(64, 64)])
    torch.testing.assert_close(pooled, roi_pool(features["0"], boxes, (2, 2), spatial_scale=1 / 8))
    assert pooled.flatten().tolist() == [9.0, 11.0, 25.0, 27.0]  # the max of each 2 × 2 block
    torch.testing.assert_close(scale_boxes(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), (100, 200), (50, 400)),
                               torch.tensor([[20.0, 10.0, 60.0, 20.0]]))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fields", [RCNN, FAST_RCNN], ids=["rcnn", "fast_rcnn"])
def test_loss_falls_on_one_batch(tmp_path, fields, seed):
    # Several initialisations, so that a lucky one cannot hide an unstable loss: R-CNN's box regressor once rang
    # under momentum SGD on unscaled features and this passed with one seed only (heads/rcnn.py,
    # LINEAR_FEATURE_NORM); the same machine failed 10 of 10 other seeds.
    torch.manual_seed(seed)
    model = detector(tmp_path, fields).train()
    torch.manual_seed(0)
    images = [torch.rand(3, 96, 128) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1]),
                "proposals": torch.tensor([[12.0, 8.0, 58.0, 52.0], [0.0, 0.0, 128.0, 96.0], [70.0, 50.0, 120.0, 90.0]])},
               {"boxes": torch.tensor([[40.0, 20.0, 120.0, 90.0]]), "labels": torch.tensor([0]),
                "proposals": torch.tensor([[45.0, 25.0, 115.0, 85.0], [0.0, 0.0, 30.0, 30.0]])}]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses, loss_dict = train_on_one_batch(model, images, targets, optimizer, 30)
    expected = {"loss_classifier", "loss_box_reg"} | ({"loss_svm"} if fields is RCNN else set())
    assert set(loss_dict) == expected
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("fields", [RCNN, FAST_RCNN], ids=["rcnn", "fast_rcnn"])
def test_trains_evaluates_and_predicts_through_the_engine(tmp_path, fields, proposal_cache):
    pipeline = Pipeline.from_yaml(pipeline_file(tmp_path, fields))
    result = pipeline.fit(tensorboard=False)
    assert (result.run_dir / "best.pt").is_file()
    assert len(list(proposal_cache.rglob("*.npy"))) == 8  # 4 train + 4 val images, computed once
    assert 0.0 <= pipeline.evaluate().stats["AP50"] <= 1.0
    report = pipeline.predict(tmp_path / "src" / "val", tmp_path / "pred", conf=0.0)
    assert report.processed == 4 and (tmp_path / "pred" / "results.json").is_file()


def test_detections_are_in_image_pixels_with_0_based_labels(tmp_path):
    torch.manual_seed(0)
    for fields in (RCNN, FAST_RCNN):
        model = detector(tmp_path, fields, extra=fields["extra"] + ", score_thresh: 0.0").eval()
        with torch.no_grad():
            out = model([torch.rand(3, 90, 120)], proposals=[torch.tensor([[10.0, 10.0, 50.0, 60.0]] * 3)])[0]
        assert len(out["boxes"]) > 0 and set(out["labels"].tolist()) <= {0, 1}
        assert (out["boxes"][:, 2] <= 120).all() and (out["boxes"][:, 3] <= 90).all()
        assert ((out["scores"] >= 0) & (out["scores"] <= 1)).all()


def test_head_settings_that_do_not_fit_the_neck(tmp_path):
    with pytest.raises(ConfigError, match="neck none"):
        load_pipeline(pipeline_file(tmp_path, {**RCNN, "neck": "fpn"}))
    with pytest.raises(ConfigError, match="pool_level"):
        load_pipeline(pipeline_file(tmp_path, FAST_RCNN, extra="pool_level: 3"))
