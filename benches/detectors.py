"""The detection heads side by side on the tree crowns: AP, AP50, training time, inference images/s.

Each bundled pipeline trains for the same budget (`--minutes`, via train.time_limit) in a fresh run folder,
is scored on the val split with pycocotools, and its inference speed is timed over the decoded val tiles
(batch 1, eager PyTorch; medians of `--repeats` passes). Speed ratios are printed against Faster R-CNN and
set beside the ratios the papers report: Fast R-CNN is 146× faster than R-CNN at test time (Girshick 2015,
VGG16, 0.32 s vs 47 s per image) and Faster R-CNN 9.2× faster than selective search + Fast R-CNN (Ren et al.
2015, VGG16, 198 ms vs 1830 ms). Heads not built yet are listed as such.
Run: `python benches/detectors.py [--minutes 8] [--heads faster_rcnn ssd yolo]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.engine.checkpoint import load_trained
from cvpipe.engine.data import image_tensor
from cvpipe.engine.inference import detect
from cvpipe.engine.predict import discover
from cvpipe.io.images import read_image, write_text
from cvpipe.pipeline import Pipeline

PIPELINES = {
    "rcnn": None,  # not built yet
    "fast_rcnn": None,  # not built yet
    "faster_rcnn": "pipelines/treecrowns_faster_rcnn.yaml",
    "ssd": "pipelines/treecrowns_ssd.yaml",
    "yolo": "pipelines/treecrowns_yolo.yaml",
}
PAPER_SPEEDUPS = {("fast_rcnn", "rcnn"): 146.0, ("faster_rcnn", "fast_rcnn"): 9.2}
RESULTS = Path(__file__).with_name("results") / "detectors.json"


def images_per_second(pipeline: Pipeline, weights: Path, tensors: list[torch.Tensor], repeats: int) -> float:
    device = torch.device("cpu")
    model, _ = load_trained(pipeline.config, weights, device)
    detect(model, tensors[:1], device)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for t in tensors:
            detect(model, [t], device)
        seconds.append(time.perf_counter() - start)
    return len(tensors) / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per head")
    parser.add_argument("--heads", nargs="+", default=[h for h, p in PIPELINES.items() if p], choices=list(PIPELINES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = fetch_dataset("treecrowns")
    files, _ = discover(root / "val")
    tensors = [image_tensor(read_image(f)) for f in files]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as out:
        for head in args.heads:
            if PIPELINES[head] is None:
                print(f"{head}: not built yet")
                continue
            overrides = [f"train.time_limit={args.minutes}", f"output.dir={out}", "eval.interval=100000"]
            pipeline = Pipeline.from_yaml(PIPELINES[head], overrides, console=Console(quiet=True))
            result = pipeline.fit(tensorboard=False)
            rows[head] = {
                "AP": round(result.metrics.stats["AP"], 4), "AP50": round(result.metrics.stats["AP50"], 4),
                "train_s": round(result.train_seconds, 1), "epochs": len(result.history),
                "img_per_s": round(images_per_second(pipeline, result.last, tensors, args.repeats), 2),
            }
            print(f"{head}: {rows[head]}")

    print(f"\ntree crowns val ({len(tensors)} tiles), {args.minutes:g} min of training each, CPU "
          f"{torch.get_num_threads()} threads; inference batch 1, eager, median of {args.repeats}")
    print(f"{'head':12} {'AP':>6} {'AP50':>6} {'train s':>8} {'img/s':>7} {'÷ faster_rcnn':>14}")
    base = rows.get("faster_rcnn", {}).get("img_per_s")
    for head, row in rows.items():
        ratio = f"{row['img_per_s'] / base:14.2f}" if base else f"{'':14}"
        print(f"{head:12} {row['AP']:6.3f} {row['AP50']:6.3f} {row['train_s']:8.0f} {row['img_per_s']:7.2f} {ratio}")
    for (fast, slow), paper in PAPER_SPEEDUPS.items():
        ours = rows[fast]["img_per_s"] / rows[slow]["img_per_s"] if fast in rows and slow in rows else None
        print(f"{fast} ÷ {slow} at test time: " + (f"{ours:.1f}× here" if ours else "not measured (head not built)")
              + f", {paper:g}× in the paper")
    recorded = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    recorded[f"{args.minutes:g}min"] = rows
    write_text(RESULTS, json.dumps(recorded, indent=2))


if __name__ == "__main__":
    main()
