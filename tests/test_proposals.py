"""Selective search: hierarchical grouping on a hand-made segmentation, and proposals that find objects."""

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from cvpipe.models.proposals import hierarchical_grouping, selective_search


def test_grouping_merges_neighbours_until_one_region_is_left():
    labels = np.repeat(np.array([[0, 0, 1, 1, 2, 2]]), 4, axis=0)  # three vertical bands, 2 px wide
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, 2:4] = 200  # the middle band differs in colour
    boxes = hierarchical_grouping(image, labels)
    assert len(boxes) == 3 + 2  # n regions, then n − 1 merges
    assert [b.tolist() for b in boxes[:3]] == [[0, 0, 1, 3], [2, 0, 3, 3], [4, 0, 5, 3]]
    assert boxes[-1].tolist() == [0, 0, 5, 3]  # the last region is the whole image
    # bands 0 and 2 look alike but are not neighbours: the first merge joins band 1 with one of them
    assert boxes[3].tolist() in ([0, 0, 3, 3], [2, 0, 5, 3])


def test_proposals_find_two_objects_on_a_background():
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(90, 6, (120, 160, 3)), 0, 255).astype(np.uint8)
    image[20:60, 30:80] = (220, 40, 40)
    image[70:110, 100:150] = (40, 60, 220)
    proposals = selective_search(image, max_proposals=500)
    assert proposals.shape[1] == 4 and 0 < len(proposals) <= 500
    assert len({tuple(b) for b in proposals.tolist()}) == len(proposals)  # no duplicates
    objects = torch.tensor([[30.0, 20.0, 80.0, 60.0], [100.0, 70.0, 150.0, 110.0]])
    best = box_iou(objects, torch.from_numpy(proposals)).max(1).values
    assert (best >= 0.9).all(), best


def test_proposals_are_deterministic_and_bounded():
    image = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    a, b = selective_search(image, seed=3), selective_search(image, seed=3)
    np.testing.assert_array_equal(a, b)
    assert (a[:, 0] >= 0).all() and (a[:, 2] <= 80).all() and (a[:, 3] <= 64).all()
    assert ((a[:, 2] - a[:, 0]) >= 10).all()  # min_size


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8)])
def test_a_grey_image_is_refused_with_a_clear_error(bad):
    with pytest.raises(ValueError, match="RGB"):
        selective_search(bad)
