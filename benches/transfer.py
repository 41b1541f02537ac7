"""Transfer learning: the treecrowns Faster R-CNN fine-tuned from ImageNet weights vs trained from scratch,
with equal CPU time budgets, scored by COCO AP50 on the val split (pycocotools).

Each run trains with `train.time_limit` set to the budget (evaluation time not counted), then evaluates its last
checkpoint twice: plain (as training does) and with the pipeline's test-time augmentation (as `cvpipe eval` does).
`--budgets 5 10 20` also shows how AP50 grows with time; `--scratch-budgets` picks which budgets get a
scratch run (default: all). Rows are merged into benches/results/transfer.json by (budget, pretrained).
Run: `python benches/transfer.py --budgets 10`  (about twice the budget in wall time per budget).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.models.weights import WeightsCatalog
from cvpipe.pipeline import Pipeline

PIPELINE = "pipelines/treecrowns_faster_rcnn.yaml"


def run(minutes: float, pretrained: bool, out: Path) -> dict:
    overrides = [f"train.time_limit={minutes}", "eval.interval=100000", f"output.dir={out}",
                 f"name={'pretrained' if pretrained else 'scratch'}_{minutes:g}min"]
    if not pretrained:
        overrides.append("model.backbone.weights=null")
    pipeline = Pipeline.from_yaml(PIPELINE, overrides, console=Console(quiet=True))
    result = pipeline.fit(tensorboard=False)
    augmented = pipeline.evaluate(result.last, json_path=result.run_dir / "tta" / "metrics.json")
    row = {"budget_min": minutes, "pretrained": pretrained, "AP50": result.metrics.stats["AP50"],
           "AP": result.metrics.stats["AP"], "AP50_tta": augmented.stats["AP50"], "AP_tta": augmented.stats["AP"],
           "iterations": result.history[-1]["iteration"],
           "epochs": len(result.history), "train_min": round(result.train_seconds / 60, 2)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", type=float, nargs="+", default=[10.0], help="minutes of training per run")
    parser.add_argument("--scratch-budgets", type=float, nargs="*", default=None)
    args = parser.parse_args()
    fetch_dataset("treecrowns")
    WeightsCatalog.load().fetch("mobilenet_v2.imagenet")
    scratch_budgets = args.budgets if args.scratch_budgets is None else args.scratch_budgets
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.budgets:
            rows.append(run(minutes, True, Path(tmp)))
            if minutes in scratch_budgets:
                rows.append(run(minutes, False, Path(tmp)))
    print(f"\n{'budget':>8} {'eval':>6} {'ImageNet AP50':>14} {'scratch AP50':>13} {'ratio':>7} {'iterations':>11}")
    for minutes in args.budgets:
        pre = next(r for r in rows if r["budget_min"] == minutes and r["pretrained"])
        scratch = next((r for r in rows if r["budget_min"] == minutes and not r["pretrained"]), None)
        for key, label in (("AP50", "plain"), ("AP50_tta", "TTA")):
            ratio = f"{pre[key] / scratch[key]:.1f}×" if scratch and scratch[key] > 0 else "-"
            scratch_ap = f"{scratch[key]:.3f}" if scratch else "-"
            print(f"{minutes:>6g} m {label:>6} {pre[key]:>14.3f} {scratch_ap:>13} {ratio:>7} {pre['iterations']:>11}")
    path = Path(__file__).with_name("results") / "transfer.json"  # earlier budgets are kept, re-run ones replaced
    path.parent.mkdir(exist_ok=True)
    earlier = json.loads(path.read_text()) if path.exists() else []
    fresh = {(r["budget_min"], r["pretrained"]) for r in rows}
    kept = [r for r in earlier if (r["budget_min"], r["pretrained"]) not in fresh]
    path.write_text(json.dumps(sorted(kept + rows, key=lambda r: (r["budget_min"], not r["pretrained"])), indent=2))


if __name__ == "__main__":
    main()
