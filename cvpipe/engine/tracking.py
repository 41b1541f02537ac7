"""Object ids across video frames: supervision's ByteTrack, fed every detection above a low floor so that its
second association (low-scoring boxes matched to existing tracks) can keep ids through partial occlusion.

supervision is pinned below 0.31, which removes `ByteTrack` in favour of the `trackers` package; that package
requires `opencv-python`, which must not be installed beside albumentations' `opencv-python-headless`.
"""

from __future__ import annotations

import warnings

import numpy as np

LOW_SCORE = 0.1  # ByteTrack's second association looks at boxes between this and the activation threshold


class Tracker:
    def __init__(self, *, conf: float, fps: float, buffer: int = 30, match: float = 0.8):
        import supervision as sv

        with warnings.catch_warnings():  # the notice of ByteTrack's move to `trackers` (see the module docstring)
            warnings.simplefilter("ignore", FutureWarning)
            self.tracker = sv.ByteTrack(track_activation_threshold=conf, lost_track_buffer=buffer,
                                        minimum_matching_threshold=match, frame_rate=fps)
        self.sv = sv

    def update(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Boxes, scores, labels of the tracked objects in this frame, and their ids (ints from 1)."""
        keep = scores >= min(LOW_SCORE, self.tracker.track_activation_threshold)
        detections = self.sv.Detections(xyxy=boxes[keep].astype(np.float32).reshape(-1, 4),
                                        confidence=scores[keep].astype(np.float32),
                                        class_id=labels[keep].astype(int))
        tracked = self.tracker.update_with_detections(detections)
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.zeros(0, int)
        return (tracked.xyxy.reshape(-1, 4), tracked.confidence if tracked.confidence is not None else np.zeros(0),
                tracked.class_id if tracked.class_id is not None else np.zeros(0, int), np.asarray(ids, int))
