"""`video.lines` and `video.zones`: tracked objects crossing a line (in / out) and standing in a polygon, counted
per class with supervision's LineZone and PolygonZone, drawn with its annotators.

A line counts an object once its whole box has crossed (LineZone's default: all four corners on the other
side), so a box that only grazes the line is not counted. "in" is a crossing from the right of the line's
direction (first point → second) to its left, as supervision defines it (in image coordinates, y down): for a
line drawn top to bottom, an object moving left to right. A zone holds an object whose box's bottom centre is
inside the polygon (where it stands). Coordinates are pixels, or fractions of the frame's width and height when every coordinate of that
line or zone is ≤ 1, settled against each stream's frame size on its first frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from cvpipe.config import VideoConfig
from cvpipe.errors import ConfigError
from cvpipe.ops.detections import Detections


def in_pixels(points: list[tuple[float, float]], width: int, height: int, where: str) -> np.ndarray:
    """The points as integer pixels of a `width`×`height` frame; fractions when all are ≤ 1."""
    xy = np.asarray(points, dtype=np.float64)
    if (xy <= 1).all():
        xy = xy * [width, height]
    outside = (xy[:, 0] > width) | (xy[:, 1] > height)
    if outside.any():
        x, y = points[int(np.argmax(outside))]
        raise ConfigError(f"{where}: the point ({x:g}, {y:g}) lies outside this stream's {width}×{height} frame; "
                          "give pixels inside it, or fractions of the width and height (all ≤ 1)")
    return np.round(xy).astype(int)


class Counting:
    """One stream's lines and zones. `update` takes a frame's tracked objects and returns the JSON-line fields;
    `draw` puts the lines, zones and counts on the picture; `summary` is what the run's summary keeps."""

    def __init__(self, video: VideoConfig, classes: list[str]):
        import supervision as sv

        self.sv, self.video, self.classes = sv, video, classes
        self.lines: dict[str, sv.LineZone] = {}
        self.zones: dict[str, sv.PolygonZone] = {}
        self.inside: dict[str, dict[str, int]] = {}  # zone → class → objects in it now
        self.visitors: dict[str, dict[str, set[int]]] = {}  # zone → class → track ids ever seen in it
        self.peak: dict[str, int] = {}  # zone → the most objects in it at once
        self.settled = False

    def _settle(self, height: int, width: int) -> None:
        sv = self.sv
        for name, ends in self.video.lines.items():
            (x1, y1), (x2, y2) = in_pixels(ends, width, height, f"video.lines.{name}")
            if (x1, y1) == (x2, y2):  # supervision divides by the line's length
                raise ConfigError(f"video.lines.{name}: its two ends fall on the same pixel ({x1}, {y1}) of this "
                                  f"stream's {width}×{height} frame; give two points at least a pixel apart")
            self.lines[name] = sv.LineZone(start=sv.Point(x1, y1), end=sv.Point(x2, y2))
        for name, polygon in self.video.zones.items():
            pixels = in_pixels(polygon, width, height, f"video.zones.{name}")
            if cv2.contourArea(pixels.astype(np.float32)) < 1:
                raise ConfigError(f"video.zones.{name}: the polygon encloses no area on this stream's {width}×"
                                  f"{height} frame (its points coincide or lie on one line); give at least three "
                                  "points around an area")
            self.zones[name] = sv.PolygonZone(polygon=pixels)
            self.inside[name], self.visitors[name], self.peak[name] = {}, {}, 0
        orange = sv.Color(r=0, g=160, b=255)  # supervision draws BGR; these frames are RGB
        self.zone_annotators = [sv.PolygonZoneAnnotator(zone, color=orange, thickness=2, opacity=0.15, text_scale=0.5)
                                for zone in self.zones.values()]
        self.line_annotator = sv.LineZoneAnnotator(thickness=2, text_scale=0.5, text_thickness=1)
        self.settled = True

    def _named(self, per_class: dict[int, int]) -> dict[str, int]:
        return {self.classes[k]: int(n) for k, n in sorted(per_class.items()) if n}

    def update(self, shape: tuple[int, ...], tracked: Detections) -> dict:
        """This frame's counts, from its tracked objects (`tracked.track_ids` set)."""
        if not self.settled:
            self._settle(*shape[:2])
        detections = self.sv.Detections(xyxy=np.asarray(tracked.boxes, np.float32).reshape(-1, 4),
                                        class_id=np.asarray(tracked.labels, int),
                                        tracker_id=np.asarray(tracked.track_ids, int))
        for line in self.lines.values():
            line.trigger(detections)
        for name, zone in self.zones.items():
            inside = zone.trigger(detections)
            now: dict[str, int] = {}
            for label, track in zip(detections.class_id[inside], detections.tracker_id[inside]):
                now[self.classes[label]] = now.get(self.classes[label], 0) + 1
                self.visitors[name].setdefault(self.classes[label], set()).add(int(track))
            self.inside[name] = dict(sorted(now.items()))
            self.peak[name] = max(self.peak[name], int(inside.sum()))
        return self.counts()

    def counts(self) -> dict:
        """Lines: objects that crossed so far, in and out per class; zones: objects in each now, per class."""
        out = {}
        if self.lines:
            out["lines"] = {name: {"in": self._named(line.in_count_per_class),
                                   "out": self._named(line.out_count_per_class)} for name, line in self.lines.items()}
        if self.zones:
            out["zones"] = dict(self.inside)
        return out

    def summary(self) -> dict:
        out = {k: v for k, v in self.counts().items() if k == "lines"}
        if self.zones:
            out["zones"] = {name: {"objects_seen": {c: len(ids) for c, ids in sorted(self.visitors[name].items())},
                                   "most_at_once": self.peak[name]} for name in self.zones}
        return out

    def draw(self, image: np.ndarray) -> np.ndarray:
        """Zones shaded, lines with their in / out totals (supervision's annotators), and the per-class counts
        listed in the bottom-left corner."""
        for annotator in self.zone_annotators:
            image = annotator.annotate(image)
        for line in self.lines.values():
            image = self.line_annotator.annotate(image, line)
        rows = [f"{name} in: {listed(c['in'])}  out: {listed(c['out'])}"
                for name, c in self.counts().get("lines", {}).items()]
        rows += [f"{name}: {listed(now)}" for name, now in self.inside.items()]
        y = image.shape[0] - 8 - 18 * (len(rows) - 1)
        for row in rows:
            (w, h), _ = cv2.getTextSize(row, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            cv2.rectangle(image, (0, y - h - 4), (w + 10, y + 5), (0, 0, 0), -1)
            cv2.putText(image, row, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            y += 18
        return image


def listed(per_class: dict[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in per_class.items()) or "0"
