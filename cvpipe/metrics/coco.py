"""COCO box and mask mAP: faster-coco-eval by default, pycocotools' COCOeval as the reference.

faster-coco-eval is COCOeval's algorithm in C++ (same matching, crowd and ignore rules, 101-point
interpolation); tests/test_coco.py holds its 12 stats and its precision array equal to pycocotools' on result
sets with crowd and ignore regions, and `eval.coco: pycocotools` runs the reference itself. Ground truth is the
dataset as COCO (category id = class index + 1); detections are COCO results (`image_id, category_id, bbox
[x, y, w, h], score`, and for masks `segmentation` as RLE).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cvpipe.metrics.base import Metrics, finite
from cvpipe.metrics.detection_analysis import DetectionAnalysis, advice, analyse

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class CocoMetrics(Metrics):
    stats: dict[str, float]  # the 12 COCOeval stats under COCO_STATS names
    per_class: dict[str, float]  # AP@[.5:.95] per class (NaN where the class has no ground truth)
    per_class_ap50: dict[str, float]
    recall: np.ndarray = field(repr=False)  # 101 recall thresholds
    precision50: dict[str, np.ndarray] = field(repr=False)  # per class, precision at IoU 0.5 (all areas, 100 dets)
    summary: str = ""  # the evaluator's printed table
    max_detections: int = 100  # COCOeval's last maxDets (max_detections)
    areas: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # class → area range → AP, AP50
    analysis: DetectionAnalysis | None = field(default=None, repr=False)

    def as_json(self) -> dict:
        extra = {} if self.max_detections == 100 else {"max_detections": self.max_detections}
        per_class = {name: {"AP": finite(self.per_class[name]), "AP50": finite(self.per_class_ap50[name]),
                            "areas": {label: {k: finite(v) for k, v in figures.items()}
                                      for label, figures in self.areas.get(name, {}).items()}}
                     for name in self.per_class}
        return {**self.stats, **extra, "per_class": per_class, **(self.analysis.as_json() if self.analysis else {})}

    def table(self) -> list:
        """What `train` and `eval` print: the evaluator's 12 "Average ..." lines and per-class AP."""
        from rich.table import Table

        table = Table("class", "AP", "AP50", title="per-class AP")
        for name, ap in self.per_class.items():
            table.add_row(name, f"{ap:.3f}", f"{self.per_class_ap50[name]:.3f}")
        coco = "\n".join(line for line in self.summary.splitlines() if line.startswith(" Average"))
        return [coco, table, *self._area_table(), *(self.analysis.tables() if self.analysis else [])]

    def _area_table(self) -> list:
        """Per-class AP in COCO's and the custom area ranges, where custom ones are set."""
        from rich.table import Table

        labels = next(iter(self.areas.values()), {})
        if len(labels) <= 3:
            return []
        table = Table("class", *(f"AP {label}" for label in labels), title="per-class AP by object area")
        for name, figures in self.areas.items():
            table.add_row(name, *(f"{figures[label]['AP']:.3f}" for label in labels))
        return [table]

    def advice(self) -> list[str]:
        """What to try, from the error breakdown (largest AP50 losses first)."""
        return advice(self.analysis) if self.analysis is not None else []

    def examples(self, records: dict, classes: list[str], n: int = 8) -> list[tuple[str, np.ndarray]]:
        """The report's worst val images: most false positives and missed objects at the analysis' IoU and
        confidence, drawn (viz/draw.draw_judged). `records`: image id → data.records.Record."""
        from cvpipe.io.images import read_image
        from cvpipe.viz.draw import draw_judged

        if self.analysis is None:
            return []
        shown = []
        for image in self.analysis.worst(n):
            record = records[image["image_id"]]
            missed = int((~image["objects"][2]).sum())
            caption = (f"{record.file_name}: {image['errors'] - missed} false positives (red), {missed} missed "
                       f"(yellow), at conf {self.analysis.conf:.3f}")
            shown.append((caption, draw_judged(read_image(record.path), image["detections"], image["objects"],
                                               classes)))
        return shown

    def plots(self, out_dir: Path) -> list[str]:
        from cvpipe.viz import plots

        plots.pr_curves(self.recall, self.precision50, self.per_class_ap50, Path(out_dir) / "pr_curve.png")
        plots.per_class_ap(self.per_class, Path(out_dir) / "per_class_ap.png")
        return ["pr_curve.png", "per_class_ap.png", *(self.analysis.plots(out_dir) if self.analysis else [])]


def coco_from_dict(gt: dict) -> COCO:
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def max_detections(gt: dict, results: list[dict]) -> int:
    """COCOeval's last maxDets: COCO's 100, unless an image holds more than 100 objects (a whole aerial scene),
    where 100 would cap recall below the objects' count; then every result of the fullest image counts."""
    from collections import Counter

    objects = Counter(a["image_id"] for a in gt.get("annotations", []))
    if not objects or max(objects.values()) <= 100:
        return 100
    found = Counter(r["image_id"] for r in results)
    return max(max(objects.values()), max(found.values(), default=0))


def _set_params(params, max_dets: int, area_ranges: dict[str, tuple[float, float]]) -> None:
    """maxDets [1, 10, max_dets], and the custom area ranges after COCO's all / small / medium / large."""
    params.maxDets = [1, 10, max_dets]
    params.areaRng = [list(r) for r in params.areaRng] + [list(r) for r in area_ranges.values()]
    params.areaRngLbl = list(params.areaRngLbl) + list(area_ranges)


def _pycocotools(gt: dict, results: list[dict], iou_type: str, max_dets: int,
                 area_ranges: dict[str, tuple[float, float]]) -> tuple[COCOeval, str]:
    coco_gt = coco_from_dict(gt)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_dt = coco_gt.loadRes(results) if results else COCO()
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        _set_params(evaluator.params, max_dets, area_ranges)
        if not results:
            evaluator.params.imgIds = sorted(coco_gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    summary = out.getvalue()
    if max_dets != 100:  # pycocotools computes its first stat at a fixed maxDets=100, absent from [1, 10, N]
        precision = evaluator.eval["precision"][:, :, :, 0, -1]
        evaluator.stats[0] = float(precision[precision > -1].mean()) if (precision > -1).any() else -1.0
        first = next(line for line in summary.splitlines() if line.startswith(" Average Precision"))
        summary = summary.replace(first, first.replace("maxDets=100", f"maxDets={max_dets}")[:-6]
                                  + f"{evaluator.stats[0]:.3f}", 1)
    return evaluator, summary


def _faster(gt: dict, results: list[dict], iou_type: str, max_dets: int, area_ranges: dict[str, tuple[float, float]]):
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster

    lines: list[str] = []
    coco_gt = FasterCOCO(gt)
    if iou_type == "bbox":
        for result in results:  # else loadRes builds a polygon per box, which bbox evaluation never reads
            result.setdefault("segmentation", [])
    coco_dt = coco_gt.loadRes(results) if results else FasterCOCO()  # adds `area` and `id` to them, as pycocotools
    evaluator = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lines.append)
    _set_params(evaluator.params, max_dets, area_ranges)
    if not results:
        evaluator.params.imgIds = sorted(coco_gt.getImgIds())
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator, "\n".join(lines)


def _standard_stats(evaluator, extra_ranges: int) -> list[float]:
    """The 12 COCO stats: faster-coco-eval puts the custom area ranges' AP and AR among them (after AP_large and
    after AR_large), pycocotools leaves them out."""
    stats = [float(v) for v in evaluator.stats]
    if extra_ranges and len(stats) > 12:
        return stats[:6] + stats[6 + extra_ranges:12 + extra_ranges]
    return stats[:12]


def _mean_valid(values: np.ndarray) -> float:
    return float(values[values > -1].mean()) if (values > -1).any() else float("nan")


def evaluate_coco(gt: dict, results: list[dict], classes: list[str], *, evaluator: str = "faster",
                  iou_type: str = "bbox", area_ranges: dict[str, tuple[float, float]] | None = None,
                  iou: float = 0.5, conf: float | str = "auto") -> CocoMetrics:
    """COCOeval (iouType `bbox` or `segm`) on a COCO ground-truth dict and a results list, by `evaluator` (faster |
    pycocotools), and the analysis (metrics/detection_analysis.py) at `iou` and `conf`. Both evaluators add fields
    to the dicts they are given (`area`, `id`, `segmentation` to results; `_ignore` to annotations). COCOeval's
    maxDets are [1, 10, `max_detections`]: [1, 10, 100] but for images of more than 100 objects; `AR100` is recall
    at that last value. `area_ranges` (name → [min, max] px²) are evaluated beside COCO's: `AP_<name>` and
    `AR_<name>` in the stats, and per class."""
    area_ranges = dict(area_ranges or {})
    max_dets = max_detections(gt, results)
    analysis = analyse(gt, results, classes, iou_type=iou_type, max_dets=max_dets, iou=iou, conf=conf)
    evaluator, summary = (_faster if evaluator == "faster" else _pycocotools)(gt, results, iou_type, max_dets,
                                                                               area_ranges)
    stats = dict(zip(COCO_STATS, _standard_stats(evaluator, len(area_ranges))))
    precision = evaluator.eval["precision"]  # [T iou, R recall, K class, A area, M maxdets]
    recall = evaluator.eval["recall"]  # [T, K, A, M]
    labels = list(evaluator.params.areaRngLbl)
    for name in area_ranges:
        a = labels.index(name)
        stats[f"AP_{name}"] = _mean_valid(precision[:, :, :, a, -1])
        stats[f"AR_{name}"] = _mean_valid(recall[:, :, a, -1])
    per_class, per_class_ap50, precision50, areas = {}, {}, {}, {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        name = classes[cat_id - 1]
        per_class[name] = _mean_valid(precision[:, :, k, 0, -1])
        per_class_ap50[name] = _mean_valid(precision[0, :, k, 0, -1])
        p50 = precision[0, :, k, 0, -1]
        precision50[name] = np.where(p50 > -1, p50, 0.0)
        areas[name] = {label: {"AP": _mean_valid(precision[:, :, k, a, -1]),
                               "AP50": _mean_valid(precision[0, :, k, a, -1])}
                       for a, label in enumerate(labels) if label != "all"}
    return CocoMetrics(stats, per_class, per_class_ap50, np.asarray(evaluator.params.recThrs), precision50, summary,
                       max_dets, areas, analysis)


@dataclass
class InstanceMetrics(CocoMetrics):
    """Instance segmentation: the mask metrics (COCOeval segm) as a CocoMetrics, and `box` (COCOeval bbox) beside
    them; `stats` holds both, the box ones as `box_AP`, `box_AP50`, ..."""

    box: CocoMetrics | None = None

    @classmethod
    def of(cls, mask: CocoMetrics, box: CocoMetrics) -> InstanceMetrics:
        stats = {**mask.stats, **{f"box_{name}": value for name, value in box.stats.items()}}
        return cls(stats, mask.per_class, mask.per_class_ap50, mask.recall, mask.precision50, mask.summary,
                   mask.max_detections, mask.areas, mask.analysis, box)

    def as_json(self) -> dict:
        out = super().as_json()
        for name, entry in out["per_class"].items():
            entry |= {"box_AP": finite(self.box.per_class[name]), "box_AP50": finite(self.box.per_class_ap50[name])}
        return out

    def table(self) -> list:
        from rich.table import Table

        table = Table("class", "mask AP", "mask AP50", "box AP", "box AP50", title="per-class AP")
        for name, ap in self.per_class.items():
            table.add_row(name, f"{ap:.3f}", f"{self.per_class_ap50[name]:.3f}", f"{self.box.per_class[name]:.3f}",
                          f"{self.box.per_class_ap50[name]:.3f}")
        lines = [f"{kind} {line}" for kind, metrics in (("mask", self), ("box ", self.box))
                 for line in metrics.summary.splitlines() if line.startswith(" Average")]
        return ["\n".join(lines), table, *self._area_table(), *(self.analysis.tables() if self.analysis else [])]

    def plots(self, out_dir: Path) -> list[str]:
        from cvpipe.viz import plots

        out_dir = Path(out_dir)
        plots.pr_curves(self.recall, self.precision50, self.per_class_ap50, out_dir / "pr_curve.png",
                        title="mask precision–recall at IoU 0.5")
        plots.per_class_ap(self.per_class, out_dir / "per_class_ap.png", metric="mask AP@[.5:.95]")
        plots.pr_curves(self.box.recall, self.box.precision50, self.box.per_class_ap50, out_dir / "box_pr_curve.png",
                        title="box precision–recall at IoU 0.5")
        analysed = [f"{name} (masks)" for name in self.analysis.plots(out_dir)] if self.analysis else []
        return ["pr_curve.png (masks)", "per_class_ap.png (masks)", "box_pr_curve.png", *analysed]
