"""Object ids across video frames: supervision's ByteTrack, fed every detection above a low floor so that its
second association (low-scoring boxes matched to existing tracks) can keep ids through partial occlusion.

supervision is pinned below 0.31, which removes `ByteTrack` in favour of the `trackers` package; that package
requires `opencv-python`, which must not be installed beside albumentations' `opencv-python-headless`.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from cvpipe.ops.detections import Detections

LOW_SCORE = 0.1  # ByteTrack's second association looks at boxes between this and the activation threshold


class Tracker:
    def __init__(self, *, conf: float, fps: float, buffer: int = 30, match: float = 0.8):
        import supervision as sv

        with warnings.catch_warnings():  # the notice of ByteTrack's move to `trackers` (see the module docstring)
            warnings.simplefilter("ignore", FutureWarning)
            self.tracker = sv.ByteTrack(track_activation_threshold=conf, lost_track_buffer=buffer,
                                        minimum_matching_threshold=match, frame_rate=fps)
        self.sv = sv

    def update(self, found: Detections) -> Detections:
        """The tracked objects among this frame's detections, with their ids (ints from 1). Each keeps its own
        row's other fields (its mask): the tracker hands back a selection of the rows it was given."""
        candidates = found.at_least(min(LOW_SCORE, self.tracker.track_activation_threshold))
        detections = self.sv.Detections(xyxy=candidates.boxes.astype(np.float32).reshape(-1, 4),
                                        confidence=candidates.scores.astype(np.float32),
                                        class_id=candidates.labels.astype(int),
                                        data={"row": np.arange(len(candidates))})
        tracked = self.tracker.update_with_detections(detections)
        if not len(tracked):
            return replace(candidates[np.zeros(0, int)], track_ids=np.zeros(0, int))
        rows = np.asarray(tracked.data["row"], int)
        return replace(candidates[rows], boxes=tracked.xyxy.reshape(-1, 4), scores=tracked.confidence,
                       labels=tracked.class_id, track_ids=np.asarray(tracked.tracker_id, int))
