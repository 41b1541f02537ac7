"""What the COCO numbers do not tell a user: the confidence to keep boxes at, which classes are confused with
which, and how much AP each kind of error costs.

Matching is COCOeval's (pycocotools `evaluateImg` at area "all" and the last maxDets: each image's detections of
a class in score order, each to the unmatched ground truth of that class it overlaps most at IoU ≥ t, crowd
regions last and re-usable, a detection on a crowd region ignored), written once here by hand: neither
pycocotools nor faster-coco-eval exposes its matches across classes, which the confusion matrix and the error
breakdown need, and faster-coco-eval's `PreviewResults.compute_confusion_matrix` matches without classes
(`useCats=False`), which is not COCO's matching. tests/test_detection_analysis.py holds this module's per-class
AP50 equal to COCOeval's and its TP / FP / FN counts equal to pycocotools' `evalImgs`.

The error breakdown follows TIDE (Bolya et al., ECCV 2020) at foreground IoU 0.5 and background IoU 0.1: every
false positive is one of localisation, class, both, duplicate or background, every missed object not explained
by a localisation or class error is missed, and each kind is fixed alone by an oracle to say what AP50 would be.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from cvpipe.metrics.base import finite

FOREGROUND_IOU = 0.5  # TIDE's t_f: a detection at this IoU or more with an object of its class finds it
BACKGROUND_IOU = 0.1  # TIDE's t_b: below this IoU with every object a detection is a background false alarm
ERRORS = ("localisation", "class", "both", "duplicate", "background", "missed")
CONF_GRID = np.linspace(0.0, 1.0, 101)  # the confidences the curves are drawn at
REC_THRS = np.linspace(0.0, 1.0, 101)  # COCOeval's recall thresholds


@dataclass
class ImageMatches:
    """One image's detections (each class's in score order, classes one after another) and objects, with their
    IoUs, matched at the IoUs asked for."""

    image_rank: int  # position in image-id order (COCOeval's concatenation order)
    image_id: int
    det_labels: np.ndarray
    det_scores: np.ndarray
    gt_labels: np.ndarray
    gt_crowd: np.ndarray  # bool
    ious: np.ndarray  # [D, G]; against a crowd region, the share of the detection inside it (COCO's rule)
    det_boxes: np.ndarray  # [D, 4] xywh (of the masks, for segm), for pictures
    gt_boxes: np.ndarray
    matched: dict[float, np.ndarray] = field(default_factory=dict)  # IoU → each detection's object index or −1

    def match(self, iou: float) -> np.ndarray:
        if iou not in self.matched:
            found = np.full(len(self.det_labels), -1)
            for label in np.unique(self.det_labels):
                dets = np.flatnonzero(self.det_labels == label)
                gts = np.flatnonzero(self.gt_labels == label)
                if len(gts):
                    local = coco_match(self.ious[np.ix_(dets, gts)], self.gt_crowd[gts], iou)
                    found[dets] = np.where(local >= 0, gts[np.maximum(local, 0)], -1)
            self.matched[iou] = found
        return self.matched[iou]

    def outcome(self, iou: float) -> tuple[np.ndarray, np.ndarray]:
        """(true positive, ignored) per detection at `iou`: ignored ones matched a crowd region."""
        gt = self.match(iou)
        ignored = (gt >= 0) & self.gt_crowd[np.maximum(gt, 0)]
        return (gt >= 0) & ~ignored, ignored


def coco_match(ious: np.ndarray, crowd: np.ndarray, iou: float) -> np.ndarray:
    """pycocotools' greedy matching of one image and class: detections (rows, in score order) to objects
    (columns); each detection's object index or −1. A detection takes the unmatched non-crowd object it overlaps
    most at ≥ `iou` (the last of equals, as pycocotools' `<` comparison does), else a crowd region (which stays
    available to later detections)."""
    threshold = min(iou, 1 - 1e-10)
    taken = np.zeros(len(crowd), bool)
    found = np.full(len(ious), -1)
    for d, row in enumerate(ious):
        for candidates in (~crowd & ~taken, crowd):
            hits = candidates & (row >= threshold)
            if hits.any():
                best = np.flatnonzero(hits & (row == row[hits].max()))[-1]
                found[d], taken[best] = best, True
                break
    return found


def images_for(gt: dict, results: list[dict], iou_type: str, max_dets: int) -> list[ImageMatches]:
    """Every ground-truth image's detections and objects, each class's detections cut to its `max_dets` best as
    COCOeval cuts them."""
    sizes = {image["id"]: (image["height"], image["width"]) for image in gt["images"]}
    objects: dict[int, list[dict]] = {}
    for ann in gt.get("annotations", []):
        objects.setdefault(ann["image_id"], []).append(ann)
    found: dict[int, list[dict]] = {}
    for result in results:
        found.setdefault(result["image_id"], []).append(result)
    images = []
    for rank, image_id in enumerate(sorted(image["id"] for image in gt["images"])):
        gts, dets = objects.get(image_id, []), []
        for label in sorted({d["category_id"] for d in found.get(image_id, [])}):
            of_class = [d for d in found[image_id] if d["category_id"] == label]
            order = np.argsort([-d["score"] for d in of_class], kind="mergesort")[:max_dets]
            dets += [of_class[i] for i in order]
        crowd = np.array([bool(g.get("iscrowd", 0)) for g in gts], bool)
        if iou_type == "segm":
            gt_shapes = [_rle(g["segmentation"], *sizes[image_id]) for g in gts]
            det_shapes = [d["segmentation"] for d in dets]
        else:
            gt_shapes, det_shapes = [g["bbox"] for g in gts], [d["bbox"] for d in dets]
        ious = (np.asarray(mask_utils.iou(det_shapes, gt_shapes, crowd.astype(np.uint8).tolist()), np.float64)
                .reshape(len(dets), len(gts)) if dets and gts else np.zeros((len(dets), len(gts))))
        images.append(ImageMatches(rank, image_id, np.array([d["category_id"] - 1 for d in dets], np.int64),
                                   np.array([d["score"] for d in dets], np.float64),
                                   np.array([g["category_id"] - 1 for g in gts], np.int64), crowd, ious,
                                   _boxes(det_shapes, iou_type), _boxes([g["bbox"] for g in gts], "bbox")))
    return images


def _boxes(shapes: list, iou_type: str) -> np.ndarray:
    if iou_type == "segm" and shapes:
        return np.asarray(mask_utils.toBbox(shapes), np.float64).reshape(-1, 4)
    return np.asarray(shapes, np.float64).reshape(-1, 4)


def _rle(segmentation, height: int, width: int) -> dict:
    """A COCO annotation's polygons, uncompressed RLE or RLE as one RLE (pycocotools' `annToRLE`)."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def average_precision(scores: np.ndarray, tp: np.ndarray, ignored: np.ndarray, objects: int) -> float:
    """COCOeval's 101-point interpolated AP of one class from its detections in concatenation order (image by
    image, each in score order; a stable sort by score keeps that order among equals). NaN without objects."""
    if objects == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    tp, ignored = tp[order], ignored[order]
    tps, fps = np.cumsum(tp), np.cumsum(~tp & ~ignored)
    if not len(tps):
        return 0.0
    recall = tps / objects
    precision = np.maximum.accumulate((tps / (tps + fps + np.spacing(1)))[::-1])[::-1]
    at = np.searchsorted(recall, REC_THRS, side="left")
    return float(np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0).mean())


@dataclass
class ClassDetections:
    """One class's detections over all images at one IoU, in concatenation order, and its object count."""

    scores: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    objects: int

    def at(self, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(true positives, counted detections) scoring ≥ each confidence of `conf`."""
        counted = ~self.ignored
        scores = np.sort(self.scores[counted])
        tp_scores = np.sort(self.scores[counted & self.tp])
        kept = len(scores) - np.searchsorted(scores, conf, side="left")
        return len(tp_scores) - np.searchsorted(tp_scores, conf, side="left"), kept


def by_class(images: list[ImageMatches], iou: float, k: int) -> list[ClassDetections]:
    """Each of the `k` classes' detections over all images, matched at `iou`."""
    parts: list[list] = [[[], [], [], 0] for _ in range(k)]
    for image in images:
        tp, ignored = image.outcome(iou)
        for label in range(k):
            rows = image.det_labels == label
            parts[label][0].append(image.det_scores[rows])
            parts[label][1].append(tp[rows])
            parts[label][2].append(ignored[rows])
            parts[label][3] += int(((image.gt_labels == label) & ~image.gt_crowd).sum())
    return [ClassDetections(np.concatenate(s or [np.zeros(0)]), np.concatenate(t or [np.zeros(0, bool)]),
                            np.concatenate(g or [np.zeros(0, bool)]), n) for s, t, g, n in parts]


def prf(tp: np.ndarray, kept: np.ndarray, objects: int) -> dict[str, np.ndarray]:
    """Precision (1 where nothing is kept), recall and F1 from counts."""
    tp, kept = np.asarray(tp, np.float64), np.asarray(kept, np.float64)
    precision = np.divide(tp, kept, out=np.ones_like(tp), where=kept > 0)
    recall = tp / objects if objects else np.zeros_like(tp)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    return {"precision": precision, "recall": recall, "f1": f1}


def curves(classes_at: list[ClassDetections], names: list[str]) -> dict:
    """Precision, recall and F1 against confidence (CONF_GRID), per class and for all classes pooled."""
    per_class, tp_all, kept_all = {}, np.zeros(len(CONF_GRID)), np.zeros(len(CONF_GRID))
    for name, dets in zip(names, classes_at):
        tp, kept = dets.at(CONF_GRID)
        tp_all, kept_all = tp_all + tp, kept_all + kept
        if dets.objects:
            per_class[name] = prf(tp, kept, dets.objects)
    return {"per_class": per_class, "all": prf(tp_all, kept_all, sum(d.objects for d in classes_at))}


def best_f1(classes_at: list[ClassDetections]) -> dict[str, float]:
    """The confidence whose kept detections, all classes pooled, have the best F1 (the higher of equals), set
    half-way to the next lower score so that scores rounded in the results files fall on the same side."""
    scores = np.unique(np.concatenate([d.scores[~d.ignored] for d in classes_at] or [np.zeros(0)]))[::-1]
    if not len(scores):
        return {"conf": 0.25, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    counts = [d.at(scores) for d in classes_at]
    tp, kept = sum(c[0] for c in counts), sum(c[1] for c in counts)
    figures = prf(tp, kept, sum(d.objects for d in classes_at))
    best = int(np.argmax(figures["f1"]))
    below = scores[best + 1] if best + 1 < len(scores) else 0.0
    return {"conf": round(float((scores[best] + below) / 2), 6), **{k: float(v[best]) for k, v in figures.items()}}


def confusion_matrix(images: list[ImageMatches], k: int, iou: float, conf: float) -> np.ndarray:
    """[true, predicted] counts over the K classes and background (index K) for detections scoring ≥ `conf`.
    First COCO's same-class matching at `iou` (the diagonal); then each remaining detection, in score order, to
    the remaining object of another class it overlaps most at ≥ `iou` (a confusion); detections left are false
    alarms (background row), objects left are missed (background column). Detections on crowd regions and crowd
    regions themselves are left out, as COCO leaves them out."""
    matrix = np.zeros((k + 1, k + 1), np.int64)
    for image in images:
        tp, ignored = image.outcome(iou)
        kept = image.det_scores >= conf
        gt_of = image.match(iou)
        free = ~image.gt_crowd.copy()
        for d in np.flatnonzero(kept & tp):
            matrix[image.det_labels[d], image.det_labels[d]] += 1
            free[gt_of[d]] = False
        left = np.flatnonzero(kept & ~tp & ~ignored)
        for d in left[np.argsort(-image.det_scores[left], kind="mergesort")]:
            row = np.where(free & (image.gt_labels != image.det_labels[d]), image.ious[d], -1.0)
            g = int(np.argmax(row)) if len(row) else -1
            if g >= 0 and row[g] >= iou:
                matrix[image.gt_labels[g], image.det_labels[d]] += 1
                free[g] = False
            else:
                matrix[k, image.det_labels[d]] += 1
        for g in np.flatnonzero(free):
            matrix[image.gt_labels[g], k] += 1
    return matrix


@dataclass
class ErrorBreakdown:
    """TIDE's error kinds per class: how many, and AP50 with each kind fixed alone (`fixed`)."""

    counts: dict[str, dict[str, int]]  # class → error kind → count (false positives by their class, missed by theirs)
    ap50: dict[str, float]  # class → AP50 as it is (NaN without objects)
    fixed: dict[str, dict[str, float]]  # error kind → class → AP50 with that kind fixed

    def mean(self, per_class: dict[str, float]) -> float:
        values = [v for name, v in per_class.items() if not np.isnan(self.ap50[name])]
        return float(np.mean(values)) if values else float("nan")

    def delta(self) -> dict[str, float]:
        """Error kind → the mean AP50 gained by fixing it (over the classes with objects)."""
        return {kind: self.mean(self.fixed[kind]) - self.mean(self.ap50) for kind in ERRORS}


@dataclass
class FalsePositive:
    kind: str
    label: int
    row: int  # its index among its class's rows
    image_rank: int
    score: float
    target: int | None = None  # the object a localisation or class error points at
    target_label: int | None = None
    target_found: bool = False  # whether another detection found that object


def classify_false_positive(image: ImageMatches, d: int, real: np.ndarray) -> tuple[str, int | None]:
    """A false positive's TIDE error kind at IoU 0.5, and the object it points at (localisation, class)."""
    label = image.det_labels[d]
    same = np.where(real & (image.gt_labels == label), image.ious[d], 0.0)
    other = np.where(real & (image.gt_labels != label), image.ious[d], 0.0)
    best_same, best_other = same.max(initial=0.0), other.max(initial=0.0)
    if BACKGROUND_IOU <= best_same < FOREGROUND_IOU:
        return "localisation", int(np.argmax(same))
    if best_other >= FOREGROUND_IOU:
        return "class", int(np.argmax(other))
    if best_same >= FOREGROUND_IOU:
        return "duplicate", None
    if max(best_same, best_other) < BACKGROUND_IOU:
        return "background", None
    return "both", None


def _ap_of(rows: list[list], objects: int) -> float:
    """AP50 of one class's rows [image rank, score, state]; a class whose every object left the count (all
    missed, fixed) scores 1 without false positives and 0 with them."""
    if objects == 0:
        return float(not any(r[2] == "fp" for r in rows))
    if not rows:
        return 0.0
    ordered = sorted(rows, key=lambda r: r[0])  # image order; stable, so each image's score order stays
    scores = np.array([r[1] for r in ordered], np.float64)
    states = np.array([r[2] for r in ordered])
    return average_precision(scores, states == "tp", states == "ignored", objects)


def error_breakdown(images: list[ImageMatches], names: list[str]) -> ErrorBreakdown:
    """Each false positive at IoU 0.5 in TIDE's order (`classify_false_positive`): localisation (0.1 ≤ IoU < 0.5
    with an object of its class), class (≥ 0.5 with an object of another class), duplicate (≥ 0.5 with an object
    of its class that a higher-scoring detection found), background (< 0.1 with every object), both (0.1 ≤ IoU <
    0.5 with an object of another class). An object no detection found is missed unless a localisation or class
    error points at it.

    The oracle fixes: a localisation error takes its object's box and becomes a true positive where no other
    detection found that object (it is removed otherwise); a class error takes its object's class likewise;
    duplicates, background and both errors are removed; missed objects leave the count of objects to find."""
    k = len(names)
    rows: list[list[list]] = [[] for _ in range(k)]  # per class: [image rank, score, "tp" | "fp" | "ignored"]
    objects, missed = np.zeros(k, np.int64), np.zeros(k, np.int64)
    false_positives: list[FalsePositive] = []
    for image in images:
        tp, ignored = image.outcome(FOREGROUND_IOU)
        found = set(image.match(FOREGROUND_IOU)[tp].tolist())
        real = ~image.gt_crowd
        objects += np.bincount(image.gt_labels[real], minlength=k)
        explained = np.zeros(len(image.gt_labels), bool)
        explained[list(found)] = True
        for d, label in enumerate(image.det_labels):
            state = "tp" if tp[d] else "ignored" if ignored[d] else "fp"
            rows[label].append([image.image_rank, float(image.det_scores[d]), state])
            if state != "fp":
                continue
            kind, target = classify_false_positive(image, d, real)
            error = FalsePositive(kind, int(label), len(rows[label]) - 1, image.image_rank, float(image.det_scores[d]))
            if target is not None:
                explained[target] = True
                error.target, error.target_label, error.target_found = target, int(image.gt_labels[target]), target in found
            false_positives.append(error)
        missed += np.bincount(image.gt_labels[real & ~explained], minlength=k)

    counts = {name: {kind: 0 for kind in ERRORS} for name in names}
    for error in false_positives:
        counts[names[error.label]][error.kind] += 1
    for c, name in enumerate(names):
        counts[name]["missed"] = int(missed[c])
    fixed = {}
    for fixing in ERRORS:
        new_rows = [[list(r) for r in class_rows] for class_rows in rows]
        left = objects - missed if fixing == "missed" else objects
        used: set[tuple[int, int]] = set()
        for error in sorted((e for e in false_positives if e.kind == fixing), key=lambda e: -e.score):
            new_rows[error.label][error.row][2] = "removed"
            if error.target is not None and not error.target_found and (error.image_rank, error.target) not in used:
                used.add((error.image_rank, error.target))
                into = error.label if error.kind == "localisation" else error.target_label
                new_rows[into].append([error.image_rank, error.score, "tp"])
        fixed[fixing] = {name: _ap_of([r for r in new_rows[c] if r[2] != "removed"], int(left[c])) if objects[c]
                         else float("nan") for c, name in enumerate(names)}
    base = {name: _ap_of(rows[c], int(objects[c])) if objects[c] else float("nan") for c, name in enumerate(names)}
    return ErrorBreakdown(counts, base, fixed)


@dataclass
class DetectionAnalysis:
    """Everything above for one evaluation: the curves at IoU 0.5 and `iou`, the best-F1 threshold, the
    confusion matrix and per-class precision / recall / F1 at `conf`, and the error breakdown."""

    classes: list[str]
    iou: float  # eval.iou: the confusion matrix's, the threshold's and the per-class table's
    conf: float  # the confusion matrix's and the table's: eval.conf, or the best-F1 one (`threshold`)
    conf_source: str
    threshold: dict[str, float]  # best F1 over all classes at `iou`: conf, f1, precision, recall
    curves: dict[float, dict]  # IoU → curves()
    at_conf: dict[str, dict[str, float]]  # class → precision, recall, f1, tp, detections, objects at (iou, conf)
    confusion: np.ndarray
    errors: ErrorBreakdown
    images: list[ImageMatches] = field(default_factory=list, repr=False)

    def worst(self, n: int) -> list[dict]:
        """The `n` images with the most false positives and missed objects at (`iou`, `conf`): image id, error
        count, and boxes (xyxy) with labels and whether each is right — detections found an object, objects were
        found."""
        judged = []
        for image in self.images:
            tp, ignored = image.outcome(self.iou)
            kept = (image.det_scores >= self.conf) & ~ignored
            found = np.zeros(len(image.gt_labels), bool)
            found[image.match(self.iou)[kept & tp]] = True
            real = ~image.gt_crowd
            errors = int((kept & ~tp).sum() + (real & ~found).sum())
            if errors:
                judged.append({"image_id": image.image_id, "errors": errors,
                               "detections": (_xyxy(image.det_boxes[kept]), image.det_labels[kept],
                                              image.det_scores[kept], tp[kept]),
                               "objects": (_xyxy(image.gt_boxes[real]), image.gt_labels[real], found[real])})
        return sorted(judged, key=lambda j: -j["errors"])[:n]

    def as_json(self) -> dict:
        def listed(curve: dict) -> dict:
            return {key: np.round(values, 4).tolist() for key, values in curve.items()}

        return {
            # no threshold where nothing was found (best F1 0): a checkpoint then carries none, and predict uses the
            # default instead of a confidence chosen among misses
            "threshold": ({**self.threshold, "iou": self.iou, "source": "best F1 on val, all classes pooled"}
                          if self.threshold["f1"] > 0 else None),
            "at_conf": {"conf": self.conf, "iou": self.iou, "source": self.conf_source, "per_class": self.at_conf},
            "confusion": {"labels": [*self.classes, "background"], "rows": "true", "columns": "predicted",
                          "iou": self.iou, "conf": self.conf, "counts": self.confusion.tolist()},
            "curves": {str(iou): {"conf": CONF_GRID.round(4).tolist(), "all": listed(c["all"]),
                                  "per_class": {n: listed(v) for n, v in c["per_class"].items()}}
                       for iou, c in self.curves.items()},
            "errors": {"iou": FOREGROUND_IOU, "background_iou": BACKGROUND_IOU, "counts": self.errors.counts,
                       "AP50": finite(self.errors.mean(self.errors.ap50)),
                       "AP50_fixed": {kind: finite(self.errors.mean(self.errors.fixed[kind])) for kind in ERRORS},
                       "per_class_AP50_fixed": {kind: {n: finite(v) for n, v in per.items()}
                                                for kind, per in self.errors.fixed.items()}},
        }

    def plots(self, out_dir) -> list[str]:
        """confusion_matrix.png, f1_curve.png (P, R and F1 against confidence), errors.png."""
        from pathlib import Path

        from cvpipe.viz import plots

        out_dir = Path(out_dir)
        plots.confusion_matrix(self.confusion, [*self.classes, "background"], out_dir / "confusion_matrix.png",
                               title=f"confusion matrix (val objects and detections, IoU {self.iou:g}, "
                                     f"conf {self.conf:.3f})")
        plots.confidence_curves(CONF_GRID, self.curves, self.iou, self.conf, out_dir / "f1_curve.png")
        totals = {kind: sum(per[kind] for per in self.errors.counts.values()) for kind in ERRORS}
        plots.error_breakdown(self.errors.delta(), totals, self.errors.mean(self.errors.ap50), out_dir / "errors.png")
        return ["confusion_matrix.png", "f1_curve.png", "errors.png"]

    def tables(self) -> list:
        """What `eval` prints: the threshold, per-class precision / recall / F1 at `conf`, and the breakdown."""
        from rich.table import Table

        t = self.threshold
        lines = [f"threshold: conf {t['conf']:.3f} gives the best F1 {t['f1']:.3f} (precision {t['precision']:.3f}, "
                 f"recall {t['recall']:.3f}) at IoU {self.iou:g}" if t["f1"] > 0 else
                 f"threshold: none: no detection matched an object at IoU {self.iou:g} at any confidence (best F1 0), "
                 "so the checkpoint carries no threshold; train longer or check the labels"]
        at = Table("class", "precision", "recall", "F1", "TP", "detections", "objects",
                   title=f"at conf {self.conf:.3f} ({self.conf_source}), IoU {self.iou:g}")
        for name, row in self.at_conf.items():
            at.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["tp"]),
                       str(row["detections"]), str(row["objects"]))
        base = self.errors.mean(self.errors.ap50)
        errors = Table("error (IoU 0.5)", "count", "AP50 if fixed", "gain", title=f"error breakdown (AP50 {base:.3f})")
        for kind, gain in self.errors.delta().items():
            count = sum(per[kind] for per in self.errors.counts.values())
            errors.add_row(kind, str(count), f"{base + gain:.3f}", f"+{gain:.3f}")
        return ["\n".join(lines), at, errors, "\n".join(f"try: {line}" for line in advice(self))]


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1) if len(boxes) else boxes.reshape(0, 4)


def analyse(gt: dict, results: list[dict], classes: list[str], *, iou_type: str = "bbox", max_dets: int = 100,
            iou: float = 0.5, conf: float | str = "auto") -> DetectionAnalysis:
    """The analysis of one evaluation's ground truth (COCO dict) and results (COCO results)."""
    images = images_for(gt, results, iou_type, max_dets)
    k = len(classes)
    at = {t: by_class(images, t, k) for t in dict.fromkeys((FOREGROUND_IOU, iou))}
    threshold = best_f1(at[iou])
    chosen, source = (threshold["conf"], "best F1 on val") if conf == "auto" else (float(conf), "eval.conf")
    at_conf = {}
    for name, dets in zip(classes, at[iou]):
        tp, kept = (int(v[0]) for v in dets.at(np.array([chosen])))
        figures = {key: float(v[0]) for key, v in prf([tp], [kept], dets.objects).items()}
        at_conf[name] = {**figures, "tp": tp, "detections": kept, "objects": dets.objects}
    return DetectionAnalysis(list(classes), iou, chosen, source, threshold,
                             {t: curves(dets, classes) for t, dets in at.items()}, at_conf,
                             confusion_matrix(images, k, iou, chosen), error_breakdown(images, classes), images)


ADVICE = {  # what usually helps with each kind of error (TIDE's reading of them, and the knobs cvpipe has)
    "localisation": "boxes land near objects but not tightly: evaluate at the scale the objects had in training "
                    "(try model.head.min_size at 0.8× and 1.25×), refine the boxes once more (faster_rcnn: "
                    "model.head.refine_boxes=true), and check that the labelled boxes are tight",
    "class": "objects are found but given the wrong class: the confusion matrix shows which pairs; add examples of "
             "those classes, or merge them if they cannot be told apart",
    "both": "boxes near objects of another class: look at those images; often the labels are ambiguous",
    "duplicate": "several boxes on one object: lower model.head.nms_thresh",
    "background": "false alarms on background: keep boxes at the best-F1 threshold (--conf auto), add images "
                  "without objects to train, train longer",
    "missed": "objects no box found: more training images or epochs; for small objects a larger input "
              "(model.head.min_size) or tiling (tiling.mode), and compare APs with AP / eval.area_ranges",
}


def advice(analysis: DetectionAnalysis, top: int = 3) -> list[str]:
    """The error kinds that cost the most AP50, largest first, each with what to try."""
    gains = sorted(analysis.errors.delta().items(), key=lambda kv: -kv[1])
    return [f"{kind}: fixing it would add {gain:.3f} AP50. {ADVICE[kind]}." for kind, gain in gains[:top]
            if gain > 0.0005]
