"""`cvpipe label audit`: the labels of a split most likely to be wrong, ranked, from the model's predictions on the
same images (`cvpipe predict` at a low threshold; its files stay in OUT/predictions/). The model is the checkpoint,
or with `--folds K` K models trained without the labels each one audits (labeling/folds.py).

Each image's labels and predictions are compared one kind of error at a time (the rules below; IoU is
torchvision's `box_iou`):
- duplicate: a label overlapping an earlier label of its class at IoU ≥ 0.7. Score: that IoU.
- the rest are matched to confident predictions of their class (score ≥ the confidence: the checkpoint's best-F1
  threshold), best prediction first, at IoU ≥ 0.5: those labels are confirmed, unless the box is loose.
- loose box: a label whose matched prediction overlaps it at IoU < 0.7, or an unmatched label with an unmatched
  confident prediction of its class at 0.1 ≤ IoU < 0.5. Score: prediction score × (1 − IoU).
- wrong class: an unmatched label under an unmatched confident prediction of another class (IoU ≥ 0.5). Score:
  that prediction's score less the best score of the label's own class there.
- spurious box: an unmatched label nothing else explains. Score: 1 − the best score of any prediction overlapping
  it (IoU ≥ 0.3), so a label the model sees nothing at scores 1.
- missing box: a confident prediction that overlaps no label (IoU < 0.3) and no more confident missing box
  (IoU ≥ 0.5). Score: its score.
Classification: a label the model gives a lower probability than its top class (wrong class; score: the
difference, the label's probability 0 where it is not among the top 5).

Written: audit.csv (one row per finding, best first: file, kind, class, model class, score, label box, model box)
and audit.html (each finding drawn: the label in red, the model's box in green).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from cvpipe.data.records import Record
from cvpipe.errors import CvpipeError
from cvpipe.labeling.folds import Predictions

DUPLICATE_IOU, MATCH_IOU, TIGHT_IOU, LOOSE_MIN_IOU, OVERLAP_IOU = 0.7, 0.5, 0.7, 0.1, 0.3
KINDS = ("missing", "spurious", "wrong class", "loose", "duplicate")


@dataclass(frozen=True)
class Finding:
    file: str
    kind: str  # one of KINDS
    score: float  # how likely the label is wrong, comparable within a kind (higher first)
    label_class: str = ""  # the label's class ("" for a missing box)
    model_class: str = ""  # the model's class ("" where no prediction is involved)
    label_box: tuple[float, ...] = ()  # xyxy pixels
    model_box: tuple[float, ...] = ()


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """torchvision's box IoU of two sets of xyxy boxes, as [len(a), len(b)]."""
    return box_iou(torch.as_tensor(a, dtype=torch.float64).reshape(-1, 4),
                   torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4)).numpy()


def _box(values) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in values)


def box_findings(labeled: Record, predicted: Record, scores: np.ndarray, classes: list[str], file: str,
                 conf: float) -> list[Finding]:
    """One image's findings (the rules in this module's docstring): its labels against the model's predictions
    (any score; `conf` says which are confident)."""
    gt, gt_labels = labeled.boxes.astype(np.float64).reshape(-1, 4), labeled.labels
    pred, pred_labels = predicted.boxes.astype(np.float64).reshape(-1, 4), predicted.labels
    scores = np.asarray(scores, np.float64)
    overlap = iou(gt, pred)  # [labels, predictions]
    findings: list[Finding] = []

    def finding(kind: str, score: float, g: int | None = None, p: int | None = None) -> Finding:
        return Finding(file, kind, round(float(score), 5), classes[gt_labels[g]] if g is not None else "",
                       classes[pred_labels[p]] if p is not None else "", _box(gt[g]) if g is not None else (),
                       _box(pred[p]) if p is not None else ())

    duplicate = np.zeros(len(gt), bool)
    between = iou(gt, gt)
    for g in range(len(gt)):
        earlier = [h for h in range(g) if not duplicate[h] and gt_labels[h] == gt_labels[g]
                   and between[g, h] >= DUPLICATE_IOU]
        if earlier:
            duplicate[g] = True
            findings.append(finding("duplicate", between[g, earlier].max(), g))
    confident = scores >= conf
    matched_gt, used = np.full(len(gt), -1), np.zeros(len(pred), bool)
    for p in np.argsort(-scores, kind="stable"):  # best prediction first takes its best free label of its class
        if not confident[p]:
            break
        free = (matched_gt < 0) & ~duplicate & (gt_labels == pred_labels[p]) & (overlap[:, p] >= MATCH_IOU)
        if free.any():
            g = int(np.flatnonzero(free)[np.argmax(overlap[free, p])])
            matched_gt[g], used[p] = p, True
            if overlap[g, p] < TIGHT_IOU:
                findings.append(finding("loose", scores[p] * (1 - overlap[g, p]), g, p))
    for g in np.flatnonzero((matched_gt < 0) & ~duplicate):
        free = confident & ~used
        other = free & (pred_labels != gt_labels[g]) & (overlap[g] >= MATCH_IOU)
        near = free & (pred_labels == gt_labels[g]) & (overlap[g] >= LOOSE_MIN_IOU)
        if other.any():
            p = int(np.flatnonzero(other)[np.argmax(scores[other])])
            own = scores[(pred_labels == gt_labels[g]) & (overlap[g] >= MATCH_IOU)]
            findings.append(finding("wrong class", scores[p] - (own.max() if len(own) else 0.0), g, p))
            used[p] = True
        elif near.any():
            p = int(np.flatnonzero(near)[np.argmax(overlap[g, near])])
            findings.append(finding("loose", scores[p] * (1 - overlap[g, p]), g, p))
            used[p] = True
        else:
            seen = scores[overlap[g] >= OVERLAP_IOU]
            findings.append(finding("spurious", 1 - (seen.max() if len(seen) else 0.0), g))
    reported: list[int] = []
    for p in np.argsort(-scores, kind="stable"):
        if not confident[p]:
            break
        alone = not len(gt) or overlap[:, p].max() < OVERLAP_IOU
        if not used[p] and alone and not (reported and iou(pred[[p]], pred[reported]).max() >= MATCH_IOU):
            reported.append(int(p))
            findings.append(finding("missing", scores[p], None, p))
    return findings


def class_findings(labeled: Record, predicted: Record, scores: np.ndarray, classes: list[str],
                   file: str) -> list[Finding]:
    """An image class the model disagrees with: its most likely class is another. Score: its probability."""
    if labeled.label is None or predicted.label is None or predicted.label == labeled.label:
        return []
    return [Finding(file, "wrong class", round(float(scores[0]), 5), classes[labeled.label],
                    classes[predicted.label])]


def ranked(findings: list[Finding]) -> list[Finding]:
    """Best first: one list to review top down (ties: in KINDS order, then by file)."""
    return sorted(findings, key=lambda f: (-f.score, KINDS.index(f.kind), f.file))


def write_csv(findings: list[Finding], path: Path) -> None:
    from cvpipe.io.images import atomic_open
    from cvpipe.io.tables import csv_writer

    with atomic_open(path) as f:
        writer = csv_writer(f)
        writer.writerow(["file", "kind", "class", "model_class", "score", "label_x1", "label_y1", "label_x2",
                         "label_y2", "model_x1", "model_y1", "model_x2", "model_y2"])
        for item in findings:
            label_box = list(item.label_box) or [""] * 4
            model_box = list(item.model_box) or [""] * 4
            writer.writerow([item.file, item.kind, item.label_class, item.model_class, item.score, *label_box,
                             *model_box])


@dataclass
class AuditReport:
    out: Path
    split: str
    images: int
    labels: int
    findings: list[Finding]
    conf: float
    conf_source: str
    model: str  # which model's predictions, in words
    skipped: list[tuple[str, str]]  # images the model could not read


def audit(config, weights: Path | None, out: Path, *, split: str = "train", conf: float | str | None = None,
          folds: int = 0, resume: bool = False, console) -> AuditReport:
    """The split's labels against the model's predictions (with `folds`, K models' out-of-fold predictions:
    labeling/folds.py): findings ranked, audit.csv and audit.html in `out`."""
    from cvpipe.engine.data import load_split
    from cvpipe.labeling.folds import out_of_fold
    from cvpipe.labeling.prelabel import require_labels
    from cvpipe.viz.audit_page import write_audit_page

    require_labels(config)
    if folds and split != "train":
        raise CvpipeError(f"--folds {folds} trains models without the labels they audit, on the train split; the "
                          f"{split} split's labels were never trained on: audit it without --folds")
    dataset, warnings = load_split(config, split)
    for line in warnings:
        console.print(f"data warning {split}: {line}", markup=False)
    if folds:
        seen = out_of_fold(config, dataset, folds, out, conf=conf, resume=resume, console=console)
        model = (f"{folds} models trained on the {split} split without the labels each one audits (out-of-fold; "
                 f"their runs in {out / 'folds'})")
    else:
        seen = trained_model(config, dataset, weights, out, conf=conf, resume=resume, console=console)
        if weights is None:
            model = f"the pipeline's ready weights ({config.model.weights}), not trained on these labels"
        elif split == "train":
            model = (f"{weights}, trained on these labels: an error it learned from them can look right to it "
                     "(--folds K: models that never saw them)")
        else:
            model = f"{weights}, not trained on the {split} split"
    findings = []
    for record in dataset.records:
        key = Path(record.path).resolve()
        if key not in seen.predicted:  # unreadable: predict reported it
            continue
        theirs, scores = seen.predicted[key]
        name = record.file_name
        findings += (class_findings(record, theirs, scores, dataset.classes, name) if record.label is not None
                     else box_findings(record, theirs, scores, dataset.classes, name, seen.confident))
    findings = ranked(findings)
    write_csv(findings, out / "audit.csv")
    images = {r.file_name: r for r in dataset.records}
    write_audit_page(out / "audit.html", f"cvpipe label audit: {config.name}, {split} split",
                     [("pipeline", config.name), ("split", f"{split}: {len(dataset)} images in {dataset.root}"),
                      ("predictions", model), ("confident", f"score ≥ {seen.confident:g} ({seen.source})")],
                     findings, images)
    return AuditReport(out, split, len(dataset), sum(len(r.boxes) or (r.label is not None) for r in dataset.records),
                       findings, seen.confident, seen.source, model, seen.skipped)


def trained_model(config, dataset, weights: Path | None, out: Path, *, conf: float | str | None, resume: bool,
                  console) -> Predictions:
    """The split's images predicted by one model (the checkpoint, or the pipeline's ready weights)."""
    from cvpipe.engine.predict import predict
    from cvpipe.labeling.prelabel import prelabels
    from cvpipe.ops.threshold import resolve_conf

    confident, source = resolve_conf(conf, weights, views=config.tta.enabled)
    files = [Path(r.path) for r in dataset.records]
    run = predict(config, files, out / "predictions", weights, conf=min(0.05, confident), resume=resume,
                  save_images=False, console=console)
    found = prelabels(config, files, out / "predictions", run.classes, weights)
    predicted = {Path(r.path).resolve(): (r, found.scores[r.file_name]) for r in found.dataset.records}
    return Predictions(predicted, confident, source, run.skipped)
