"""The Detections value: every field stays aligned through indexing, filtering, shifting and joining; values by hand."""

from __future__ import annotations

import numpy as np
import torch

from cvpipe.data.records import PlacedMask
from cvpipe.ops.detections import Detections


def three() -> Detections:
    masks = [PlacedMask(0, 0, np.ones((2, 2), np.uint8)), PlacedMask(5, 5, np.ones((1, 3), np.uint8)),
             PlacedMask(9, 1, np.ones((4, 1), np.uint8))]
    return Detections(np.array([[0, 0, 2, 2], [5, 5, 8, 6], [9, 1, 10, 5]], np.float32),
                      np.array([0.9, 0.2, 0.5], np.float32), np.array([1, 0, 1]), masks, np.array([7, 8, 9]))


def test_rows_keep_their_boxes_masks_and_track_ids_together():
    found = three()
    kept = found.at_least(0.5)  # the one confidence filter
    assert kept.scores.tolist() == [0.8999999761581421, 0.5] and kept.labels.tolist() == [1, 1]
    assert [m.x for m in kept.masks] == [0, 9] and kept.track_ids.tolist() == [7, 9]
    picked = found[np.array([2, 0])]
    assert picked.boxes.tolist() == [[9, 1, 10, 5], [0, 0, 2, 2]] and [m.area for m in picked.masks] == [4, 4]
    assert len(found[np.zeros(3, bool)]) == 0 and found[np.zeros(3, bool)].boxes.shape == (0, 4)


def test_a_slice_shift_moves_boxes_and_placed_masks_and_joining_keeps_order():
    shifted = three().shifted(100, 10)
    assert shifted.boxes[1].tolist() == [105, 15, 108, 16] and (shifted.masks[1].x, shifted.masks[1].y) == (105, 15)
    joined = Detections.joined([three()[np.array([0])], shifted[np.array([2])]])
    assert joined.boxes.tolist() == [[0, 0, 2, 2], [109, 11, 110, 15]] and [m.x for m in joined.masks] == [0, 109]
    assert len(Detections.joined([])) == 0


def test_a_models_output_becomes_detections_and_the_journal_rounds_as_written():
    output = {"boxes": torch.tensor([[1.23456, 2.0, 3.0, 4.004]]), "scores": torch.tensor([0.1234567]),
              "labels": torch.tensor([2]), "masks": torch.zeros(1, 1, 4, 4)}
    found = Detections.from_output(output)
    assert found.masks is None and found.labels.tolist() == [2]
    assert found.journal() == {"boxes": [[1.23, 2.0, 3.0, 4.0]], "scores": [0.12346], "labels": [2]}
    assert found.journal(["a", "b", "tree"])["labels"] == ["tree"]  # video's JSON lines name the class


def test_the_journal_reads_back_and_becomes_coco_results():
    entry = {"file": "a.jpg", "boxes": [[1.23, 2.0, 3.5, 4.0], [0.0, 0.0, 10.0, 10.0]], "scores": [0.12346, 0.9],
             "labels": [2, 0]}
    found = Detections.from_journal(entry)
    assert found.journal() == {key: entry[key] for key in ("boxes", "scores", "labels")}  # a round trip
    assert found.coco_results(7) == [
        {"image_id": 7, "category_id": 3, "bbox": [1.23, 2.0, 2.27, 2.0], "score": 0.12346},
        {"image_id": 7, "category_id": 1, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 0.9}]
    assert Detections.from_journal({"boxes": [], "scores": [], "labels": []}).boxes.shape == (0, 4)
