"""Test-time augmentation on the tree-crown val split: AP50 / AP and seconds per tile for each set of views,
against the plain evaluation of the same checkpoint measured in the same run.

Run: `python benches/tta.py --weights runs/demo/treecrowns_faster_rcnn/best.pt` (about 10 minutes on 2
cores); without `--weights` it first trains the pipeline for its own 8 minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import save_results
from rich.console import Console

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.models.weights import WeightsCatalog
from cvpipe.ops.tta import tta_views
from cvpipe.pipeline import Pipeline

PIPELINE = "pipelines/treecrowns_faster_rcnn.yaml"
VARIANTS = {  # name: (flips, scales, fusion)
    "plain": ("none", [1.0], "wbf"),
    "plain at 0.8×": ("none", [0.8], "wbf"),
    "mirror": ("hflip", [1.0], "wbf"),
    "8 mirrors/turns": ("dihedral", [1.0], "wbf"),
    "mirror × 1, 0.8": ("hflip", [1.0, 0.8], "wbf"),
    "mirror × 1.25, 1, 0.8 (bundled)": ("hflip", [1.25, 1.0, 0.8], "wbf"),
    "mirror × 1.25, 1, 0.8, NMS": ("hflip", [1.25, 1.0, 0.8], "nms"),
    "8 mirrors/turns × 1.25, 1, 0.8": ("dihedral", [1.25, 1.0, 0.8], "wbf"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", help="a treecrowns_faster_rcnn checkpoint (default: train one first)")
    args = parser.parse_args()
    fetch_dataset("treecrowns")
    WeightsCatalog.load().fetch("mobilenet_v2.imagenet")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.weights is None:
            trainer = Pipeline.from_yaml(PIPELINE, [f"output.dir={tmp}"], console=Console(quiet=True))
            args.weights = str(trainer.fit(tensorboard=False).best)
        for name, (flips, scales, fusion) in VARIANTS.items():
            enabled = name != "plain"  # "plain at 0.8×" is one view through the fusion
            overrides = [f"tta.enabled={str(enabled).lower()}", f"tta.flips={flips}", f"tta.scales={scales}",
                         f"tta.fusion={fusion}", "tta.iou=0.5" if fusion == "nms" else "tta.iou=0.55"]
            pipeline = Pipeline.from_yaml(PIPELINE, overrides, console=Console(quiet=True))
            start = time.perf_counter()
            metrics = pipeline.evaluate(args.weights, json_path=Path(tmp) / "metrics.json")
            seconds = time.perf_counter() - start
            rows.append({"views": name, "passes": tta_views(pipeline.config.tta),
                         "AP50": metrics.stats["AP50"], "AP": metrics.stats["AP"], "seconds": seconds})
            print(rows[-1], flush=True)
    plain = rows[0]
    print(f"\n{'views':<34} {'passes':>6} {'AP50':>6} {'AP':>6} {'s':>6} {'× time':>7} {'AP50 gain':>9}")
    for r in rows:
        r["time_ratio"] = r["seconds"] / plain["seconds"]
        print(f"{r['views']:<34} {r['passes']:>6} {r['AP50']:>6.3f} {r['AP']:>6.3f} {r['seconds']:>6.1f} "
              f"{r['time_ratio']:>7.1f} {r['AP50'] - plain['AP50']:>+9.3f}")
    save_results("tta", {"weights": args.weights, "rows": rows})


if __name__ == "__main__":
    main()
