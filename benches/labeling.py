"""The labeling loop, simulated on the tree crowns (real labels standing in for the person who labels).

`audit`: 10 % of the training split's boxes made wrong (`data.synthetic.corrupt_labels`: dropped, added on
background, moved by 30–50 % of their size; the crowns have one class, so no class swaps), the pipeline trained on
them (its own time budget, or `--minutes`), then `cvpipe label audit` of that split with that model. Per kind:
precision of its top-k findings at k = the number of corruptions of that kind (a finding is right when it points
at a corrupted box: IoU ≥ 0.5 for a missing box's prediction, the same box for the others). Seeds 0, 1, 2.

`select`: start from one training image's labels (its 400-px windows), then add windows of the other images in
rounds, each round `--round-boxes` true boxes, chosen by `cvpipe label select`'s ranking (uncertainty,
disagreement with the test-time views, k-center greedy on the model's features) or at random; after each round
the pipeline is trained again from the start on what is labeled, and scored plain (AP50) on the held-out image.
The baseline, random, is measured in the same run with the same seeds. Reported: AP50 against boxes labeled per
strategy, and the share of random's final boxes `select` needs to reach random's final AP50.

Run alone (training is time-limited): `python benches/labeling.py audit` (3 × the pipeline's 8 minutes),
`python benches/labeling.py select --minutes 2` (3 seeds × (1 + 2 × rounds) trainings); `audit --folds 3` with
out-of-fold models instead of the one trained on the corrupted labels. Results merge into
benches/results/labeling.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import tempfile
from pathlib import Path

import numpy as np
from common import RESULTS, save_results
from rich.console import Console

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.data.formats import read_dataset, write_dataset
from cvpipe.data.records import Dataset, Record
from cvpipe.data.synthetic import corrupt_labels
from cvpipe.io.images import read_image, write_image
from cvpipe.labeling.audit import KINDS, iou
from cvpipe.pipeline import Pipeline

PIPELINE = "treecrowns_faster_rcnn"
QUIET = Console(quiet=True)
# select's rounds are scored plain, and the ranking takes the plain threshold: training need not also measure the
# threshold with the views on the val image (six passes over its 574 crowns after every run)
PLAIN = ("tta.enabled=false",)


def settings(root: Path, out: Path, seed: int, minutes: float | None) -> list[str]:
    """The pipeline on the dataset at `root` (train and val splits, VOC). With `minutes`, a short budget, the val
    image is scored every 50 epochs only: each scoring of its 574 crowns takes ~25 s, which a 2-minute budget of
    one-window epochs would otherwise spend twenty times over."""
    found = [f"data.root={root}", f"output.dir={out}", f"train.seed={seed}"]
    return found + ([f"train.time_limit={minutes}", "eval.interval=50"] if minutes else [])


def trained(root: Path, out: Path, seed: int, minutes: float | None, extra: tuple[str, ...] = ()) -> tuple[Pipeline, Path]:
    """The pipeline trained on the dataset at `root` (`settings`, then `extra`)."""
    pipeline = Pipeline.from_yaml(PIPELINE, [*settings(root, out, seed, minutes), *extra], console=QUIET)
    return pipeline, pipeline.fit(tensorboard=False).best


def plain_ap50(pipeline: Pipeline, best: Path) -> float:
    plain = Pipeline.from_yaml(PIPELINE, [*pipeline_overrides(pipeline), "tta.enabled=false"], console=QUIET)
    return plain.evaluate(best).stats["AP50"]


def pipeline_overrides(pipeline: Pipeline) -> list[str]:
    config = pipeline.config
    return [f"data.root={config.data.root}", f"output.dir={config.output.dir}", f"train.seed={config.train.seed}"]


def with_val(root: Path, train: Dataset, source: Path) -> Path:
    """A VOC dataset at `root`: `train` as given, the val split copied from `source`."""
    write_dataset(train, root, "voc", "train")
    write_dataset(read_dataset(source, "voc", "val", ["Tree"]), root, "voc", "val")
    return root


# ----------------------------------------------------------------------------- audit


def is_found(finding, truth: tuple[str, str, tuple]) -> bool:
    file, kind, box = truth
    if finding.file != file or finding.kind != kind:
        return False
    mine = finding.model_box if kind == "missing" else finding.label_box
    return bool(mine) and iou(np.array([mine]), np.array([box]))[0, 0] >= (0.5 if kind == "missing" else 0.9)


def audit_run(seed: int, minutes: float | None, folds: int, tmp: Path) -> dict:
    source = fetch_dataset("treecrowns")
    clean = read_dataset(source, "voc", "train", ["Tree"])
    corrupted, truth = corrupt_labels(clean, 0.1, seed)
    root = with_val(tmp / f"audit{seed}" / "data", corrupted, source)
    if folds:  # K models, each trained without the labels it audits
        pipeline = Pipeline.from_yaml(PIPELINE, settings(root, tmp / f"audit{seed}" / "runs", seed, minutes),
                                      console=QUIET)
        report = pipeline.audit(tmp / f"audit{seed}" / "audit", split="train", folds=folds)
    else:  # the model trained on the corrupted labels
        pipeline, best = trained(root, tmp / f"audit{seed}" / "runs", seed, minutes)
        report = pipeline.audit(tmp / f"audit{seed}" / "audit", weights=best, split="train")
    run = {"seed": seed, "boxes": sum(len(r.boxes) for r in clean.records), "corrupted": len(truth)}
    for kind in KINDS:
        wanted = [t for t in truth if t[1] == kind]
        if not wanted:
            continue
        best_k = [f for f in report.findings if f.kind == kind][:len(wanted)]
        right = sum(any(is_found(f, t) for t in wanted) for f in best_k)
        run[kind] = {"k": len(wanted), "precision": right / len(wanted), "findings": sum(
            f.kind == kind for f in report.findings)}
    print("audit", run, flush=True)
    return run


# ----------------------------------------------------------------------------- select


def window_boxes(record: Record, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The labels of a window of an image: the boxes at least 40 % inside it, clipped to it, in its pixels."""
    x, y, w, h = window
    boxes = record.boxes - np.array([x, y, x, y], np.float32)
    clipped = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)

    def area(b: np.ndarray) -> np.ndarray:
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    keep = area(clipped) >= 0.4 * np.maximum(area(boxes), 1e-6)
    return clipped[keep], record.labels[keep]


def window_record(record: Record, window: tuple[int, int, int, int], out: Path, name: str) -> Record:
    """A window of a labeled image as an image of its own, with its labels."""
    x, y, w, h = window
    write_image(out / name, read_image(record.path)[y:y + h, x:x + w])
    return Record(out / name, name, 0, w, h, *window_boxes(record, window))


def select_run(seed: int, rounds: int, round_boxes: int, minutes: float, tmp: Path) -> dict:
    from cvpipe.engine.runtime import inference_model
    from cvpipe.labeling.select import backbone_of, candidates_of, pick
    from cvpipe.ops.device import resolve_device
    from cvpipe.ops.slicing import slice_origins, slices_needed
    from cvpipe.ops.threshold import resolve_conf

    source = fetch_dataset("treecrowns")
    clean = read_dataset(source, "voc", "train", ["Tree"])
    # the image with the fewest labels to start from; the others' windows are the pool
    start = min(clean.records, key=lambda r: len(r.boxes))
    pool = [r for r in clean.records if r is not start]
    work = tmp / f"select{seed}"
    base = Pipeline.from_yaml(PIPELINE, [f"data.root={source}"], console=QUIET).config
    # every window of the pool, with its true boxes (the labels a person would draw there)
    pool_windows: list[tuple[Record, tuple]] = []

    def windows_of(record: Record) -> list[tuple]:
        size = slices_needed(base, record.height, record.width) or max(record.height, record.width)
        return [(x, y, min(size, record.width - x), min(size, record.height - y))
                for x, y in slice_origins(record.height, record.width, size, 0.0)]

    for record in pool:
        pool_windows += [(record, window) for window in windows_of(record)]
    labeled_start = [window_record(start, w, work / "windows", f"start_{i}.png") for i, w in enumerate(windows_of(start))]
    true_boxes = {(r.file_name, w): len(window_boxes(r, w)[0]) for r, w in pool_windows}
    curves: dict[str, list[tuple[int, float]]] = {}
    first_root = with_val(work / "round0" / "data", Dataset(work, "train", ["Tree"], labeled_start), source)
    first, first_best = trained(first_root, work / "round0" / "runs", seed, minutes, PLAIN)
    first_ap = plain_ap50(first, first_best)
    start_boxes = sum(len(r.boxes) for r in labeled_start)
    for strategy in ("random", "select"):
        labeled, taken, best, ap = list(labeled_start), set(), first_best, first_ap
        curve = [(start_boxes, ap)]
        rng = random.Random(seed)
        for round_ in range(1, rounds + 1):
            free = [(r, w) for r, w in pool_windows if (r.file_name, w) not in taken]
            if strategy == "random":
                order = rng.sample(free, len(free))
            else:  # the model of the previous round ranks the free windows
                device = resolve_device("cpu")
                model = inference_model(base, best, device, "pytorch").model
                conf, _ = resolve_conf(None, best, views=base.tta.enabled)
                backbone = backbone_of(model)
                candidates = [c for record in pool for c in candidates_of(base, model, backbone, record.path,
                                                                          record.file_name, device, conf)
                              if (record.file_name, c.window) not in taken]
                order = [(next(r for r in pool if r.file_name == c.file), c.window)
                         for c in pick(candidates, len(candidates))]
            added = 0
            for record, window in order:
                if added >= round_boxes:
                    break
                taken.add((record.file_name, window))
                name = f"{Path(record.file_name).stem}_{window[0]}_{window[1]}.png"
                labeled.append(window_record(record, window, work / "windows", name))
                added += true_boxes[(record.file_name, window)]
            root = with_val(work / f"{strategy}{round_}" / "data", Dataset(work, "train", ["Tree"], labeled), source)
            pipeline, best = trained(root, work / f"{strategy}{round_}" / "runs", seed, minutes, PLAIN)
            ap = plain_ap50(pipeline, best)
            curve.append((sum(len(r.boxes) for r in labeled), ap))
            print("select", seed, strategy, round_, curve[-1], flush=True)
        curves[strategy] = curve
    return {"seed": seed, "curves": curves}


def boxes_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """Boxes labeled when the curve first reaches `target` (linear between rounds), None if it never does."""
    for (b0, a0), (b1, a1) in zip(curve, curve[1:]):
        if a1 >= target:
            return b1 if a1 == a0 else b0 + (b1 - b0) * max(0.0, (target - a0) / (a1 - a0))
    return curve[0][0] if curve[0][1] >= target else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("audit", "select"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=None, help="training budget per run (default: the pipeline's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-boxes", type=int, default=60)
    parser.add_argument("--folds", type=int, default=0, help="audit: with K out-of-fold models (`--folds K`)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the datasets, trainings and predictions in this new folder (default: a temporary one)")
    args = parser.parse_args()
    path = RESULTS / "labeling.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.pop("machine", None)
    with tempfile.TemporaryDirectory() if args.keep is None else contextlib.nullcontext(args.keep) as tmp:
        if args.part == "audit":
            runs = [audit_run(seed, args.minutes, args.folds, Path(tmp)) for seed in args.seeds]
            summary = {kind: {"median": statistics.median(r[kind]["precision"] for r in runs),
                              "range": [min(r[kind]["precision"] for r in runs), max(r[kind]["precision"] for r in runs)]}
                       for kind in KINDS if kind in runs[0]}
            results["audit" + (f"_folds{args.folds}" if args.folds else "")] = {
                "pipeline": PIPELINE, "minutes": args.minutes, "folds": args.folds, "runs": runs,
                "precision_at_k": summary}
        else:
            runs = [select_run(seed, args.rounds, args.round_boxes, args.minutes or 2, Path(tmp)) for seed in args.seeds]
            shares = []
            for run in runs:
                random_curve, select_curve = run["curves"]["random"], run["curves"]["select"]
                needed = boxes_to_reach(select_curve, random_curve[-1][1])
                run["share_of_random_boxes"] = needed / random_curve[-1][0] if needed is not None else None
                shares.append(run["share_of_random_boxes"])
            known = [s for s in shares if s is not None]
            results["select"] = {"pipeline": PIPELINE, "minutes": args.minutes or 2, "rounds": args.rounds,
                                 "round_boxes": args.round_boxes, "runs": runs,
                                 "share_median": statistics.median(known) if known else None,
                                 "never_reached": len(shares) - len(known)}
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1, default=str)[:3000])
    save_results("labeling", results)


if __name__ == "__main__":
    main()
