"""Augmentation from YAML: geometry travels with pixels; boxes leaving the image are clipped or dropped."""

import numpy as np
import pytest

from cvpipe.cli import main
from cvpipe.config import AugmentConfig
from cvpipe.data.augment import apply_augment, build_augment, build_transform
from cvpipe.data.formats import write_dataset


def cfg(train):
    return AugmentConfig(train=train, eval=[], min_visibility=0.3, min_area=4)


def sample():
    masks = [np.zeros((60, 80), np.uint8) for _ in range(3)]
    masks[0][10:30, 5:25] = 1
    masks[1][40:60, 60:80] = 1
    masks[2][0:20, 70:80] = 1
    boxes = np.array([[5, 10, 25, 30], [60, 40, 80, 60], [70, -5, 95, 20]], np.float32)  # last leaves the image
    return {"image": np.zeros((60, 80, 3), np.uint8), "boxes": boxes, "labels": np.array([0, 1, 2]), "masks": masks}


def test_flip_moves_boxes_and_masks_together():
    out = apply_augment(build_augment(cfg([{"HorizontalFlip": {"p": 1.0}}]), "train"), sample())
    np.testing.assert_allclose(out["boxes"], [[55, 10, 75, 30], [0, 40, 20, 60], [0, 0, 10, 20]])
    for m, (x1, y1, x2, y2) in zip(out["masks"], out["boxes"].astype(int)):
        ys, xs = np.nonzero(m)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)


def test_crop_drops_boxes_by_visibility_with_their_labels_and_masks():
    out = apply_augment(build_augment(cfg([{"Crop": {"x_min": 0, "y_min": 0, "x_max": 64, "y_max": 48}}]), "train"),
                        sample())
    # box 1 keeps 4x8 of 20x20 px (8% < 30%): dropped; box 2 is outside the crop: dropped
    np.testing.assert_allclose(out["boxes"], [[5, 10, 25, 30]])
    assert out["labels"].tolist() == [0] and len(out["masks"]) == 1


def test_random_pipeline_never_crashes_on_edge_boxes():
    t = build_augment(cfg([{"RandomSizedBBoxSafeCrop": {"height": 32, "width": 32}}, "Transpose",
                           {"OneOf": {"transforms": [{"Rotate": {"limit": 30}}, {"Affine": {"scale": 1.5}}], "p": 1}}]),
                      "train", seed=1)
    for _ in range(20):
        out = apply_augment(t, sample())
        assert out["image"].shape == (32, 32, 3)
        assert np.all(out["boxes"] >= 0) and np.all(out["boxes"] <= 32)
        assert len(out["boxes"]) == len(out["labels"]) == len(out["masks"])


def test_bad_transform_entries():
    with pytest.raises(ValueError, match='did you mean "HorizontalFlip"'):
        build_transform("HorizontalFlp")
    with pytest.raises(ValueError, match="RandomCrop: invalid parameters"):
        build_transform({"RandomCrop": {"height": -1, "width": 3}})


def test_cli_preview_writes_grid(shapes, tmp_path):
    write_dataset(shapes, tmp_path / "voc", "voc", "train")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"name: p\ntask: detect\ndata: {{format: voc, root: {tmp_path / 'voc'}}}\n"
                        "augment: {train: [{HorizontalFlip: {p: 0.5}}]}\nmodel: {head: {name: faster_rcnn}}\n")
    out = tmp_path / "grid.png"
    assert main(["augment", "preview", str(pipeline), "--n", "4", "--out", str(out)]) == 0
    import cv2

    whole = cv2.imread(str(out))
    assert whole.shape == (512, 512, 3)
    assert (whole[230:256] == 32).all()  # a 112×96 image letterboxed into its 256-px cell leaves rows of the fill
    # images `tiling:` slices: training's windows of them (64×64, square: the cell is full)
    tiling = ["--set", "tiling.mode=always", "tiling.size=64"]
    assert main(["augment", "preview", str(pipeline), "--n", "4", "--out", str(out), *tiling]) == 0
    assert not (cv2.imread(str(out))[230:256, :256] == 32).all()
