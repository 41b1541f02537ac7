"""The detection heads side by side on the tree crowns: AP, AP50, training time, inference images/s.

Each bundled pipeline trains for the same budget (`--minutes`, via train.time_limit) in a fresh run folder,
is scored on the val split with pycocotools, and its inference speed is timed over the decoded val tiles
(batch 1, eager PyTorch; medians of `--repeats` passes). R-CNN and Fast R-CNN get their selective-search
proposals from the cache (precomputed before training, as in the papers); the seconds selective search takes
per tile are measured on its own and added for the "with proposals" speed.

Speed ratios are set beside the papers': Fast R-CNN is 146× faster than R-CNN at test time, proposals
excluded (Girshick 2015, VGG16, 0.32 s vs 47 s per image), and Faster R-CNN 9.2× faster than selective
search + Fast R-CNN, proposals included (Ren et al. 2015, VGG16, 198 ms vs 1830 ms).
Run: `python benches/detectors.py [--minutes 8] [--heads rcnn fast_rcnn faster_rcnn ssd yolo]`.
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
from cvpipe.data.samples import image_tensor
from cvpipe.engine.checkpoint import load_trained
from cvpipe.io.images import discover, read_image, write_text
from cvpipe.models.proposals import proposals_for
from cvpipe.ops.inference import detect
from cvpipe.pipeline import Pipeline

PIPELINES = {
    "rcnn": "pipelines/treecrowns_rcnn.yaml",
    "fast_rcnn": "pipelines/treecrowns_fast_rcnn.yaml",
    "faster_rcnn": "pipelines/treecrowns_faster_rcnn.yaml",
    "ssd": "pipelines/treecrowns_ssd.yaml",
    "yolo": "pipelines/treecrowns_yolo.yaml",
}
# (faster, slower, the slower's speed with its proposal time added?) → the paper's ratio
PAPER_SPEEDUPS = {("fast_rcnn", "rcnn", False): 146.0, ("faster_rcnn", "fast_rcnn", True): 9.2}
PROPOSAL_TILES = 6  # val tiles selective search is timed on (uncached)
TIME_CAP_S = 120  # speed passes stop repeating after this long (R-CNN needs ~1 min per pass)
RESULTS = Path(__file__).with_name("results") / "detectors.json"


def images_per_second(pipeline: Pipeline, weights: Path, tensors: list[torch.Tensor], repeats: int) -> float:
    device = torch.device("cpu")
    model, _ = load_trained(pipeline.config, weights, device)
    detect(model, tensors[:1], device)  # warm-up
    seconds = []
    while len(seconds) < repeats and sum(seconds) < TIME_CAP_S:
        start = time.perf_counter()
        for t in tensors:
            detect(model, [t], device)
        seconds.append(time.perf_counter() - start)
    return len(tensors) / statistics.median(seconds)


def proposal_seconds(pipeline: Pipeline, tensors: list[torch.Tensor]) -> float:
    """Median seconds of selective search per tile with the pipeline's settings, cache bypassed."""
    proposals = proposals_for(pipeline.config)
    seconds = []
    for t in tensors[:PROPOSAL_TILES]:
        start = time.perf_counter()
        proposals.compute(t.permute(1, 2, 0).numpy())
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def with_proposals(row: dict) -> float:
    """Images/s when each image's selective search runs before the detector (no cache)."""
    return 1.0 / (1.0 / row["img_per_s"] + row["proposal_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per head")
    parser.add_argument("--heads", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = fetch_dataset("treecrowns")
    files, _ = discover(root / "val")
    tensors = [image_tensor(read_image(f)) for f in files]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as out:
        for head in args.heads:
            overrides = [f"train.time_limit={args.minutes}", f"output.dir={out}", "eval.interval=100000"]
            pipeline = Pipeline.from_yaml(PIPELINES[head], overrides, console=Console(quiet=True))
            result = pipeline.fit(tensorboard=False)
            rows[head] = {
                "AP": round(result.metrics.stats["AP"], 4), "AP50": round(result.metrics.stats["AP50"], 4),
                "train_s": round(result.train_seconds, 1), "epochs": len(result.history),
                "train_img_per_s": round(result.history[-1]["iteration"] * pipeline.config.train.batch_size
                                         / result.train_seconds, 2),
                "img_per_s": round(images_per_second(pipeline, result.last, tensors, args.repeats), 3),
            }
            if proposals_for(pipeline.config) is not None:
                rows[head]["proposal_s"] = round(proposal_seconds(pipeline, tensors), 3)
            print(f"{head}: {rows[head]}")

    print(f"\ntree crowns val ({len(tensors)} tiles), {args.minutes:g} min of training each, CPU "
          f"{torch.get_num_threads()} threads; inference batch 1, eager, median of {args.repeats}")
    print(f"{'head':12} {'AP':>6} {'AP50':>6} {'train s':>8} {'img/s':>7} {'÷ faster_rcnn':>14} "
          f"{'proposals s/img':>16} {'img/s with them':>16}")
    base = rows.get("faster_rcnn", {}).get("img_per_s")
    for head, row in rows.items():
        ratio = f"{row['img_per_s'] / base:14.3f}" if base else f"{'':14}"
        extra = (f" {row['proposal_s']:16.2f} {with_proposals(row):16.3f}" if "proposal_s" in row else "")
        print(f"{head:12} {row['AP']:6.3f} {row['AP50']:6.3f} {row['train_s']:8.0f} {row['img_per_s']:7.2f} {ratio}"
              + extra)
    for (fast, slow, add_proposals), paper in PAPER_SPEEDUPS.items():
        if fast in rows and slow in rows:
            slow_speed = with_proposals(rows[slow]) if add_proposals else rows[slow]["img_per_s"]
            ours = f"{rows[fast]['img_per_s'] / slow_speed:.1f}× here"
        else:
            ours = "not measured (run both heads)"
        which = "proposals included" if add_proposals else "proposals excluded"
        print(f"{fast} ÷ {slow} at test time, {which}: {ours}, {paper:g}× in the paper")
    recorded = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    recorded.setdefault(f"{args.minutes:g}min", {}).update(rows)  # heads not run this time keep their last row
    write_text(RESULTS, json.dumps(recorded, indent=2))


if __name__ == "__main__":
    main()
