"""Sliced `predict` on large images: its throughput against the bare model over the same slices, and its peak
memory on a 10,000 × 10,000 px image against a 5,000 × 5,000 one.

Throughput: the tree-crown val image (2299×2472, 64 slices of 400 px at overlap 0.25), a trained
treecrowns_faster_rcnn checkpoint, plain (no test-time views). The baseline is the bare loop: the decoded image
already in memory, the same slices in the same batches of `tiling.batch` straight into `model(...)`, nothing
merged or written. `predict` is timed by its own clock (what its img/s reports: decoding, slicing, detecting,
merging, the journal; no annotated copy), and as the whole call (model loading, result files).
`--repeats` alternating runs, medians.
Memory: each size runs `predict` in a fresh process on a synthetic scene (textured background with 30-px squares)
and reports that process's peak RSS.
Run: `python benches/sliced_predict.py [--weights runs/demo/treecrowns_faster_rcnn/best.pt] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.data.samples import image_tensor
from cvpipe.engine.checkpoint import load_trained
from cvpipe.engine.runs import default_weights
from cvpipe.io.images import read_image
from cvpipe.ops.inference import to_device
from cvpipe.ops.slicing import slice_origins, slice_size
from cvpipe.pipeline import Pipeline

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "treecrowns_faster_rcnn.yaml"
OVERRIDES = ["tta.enabled=false", "output.save_images=false"]
CPU = torch.device("cpu")


@torch.inference_mode()
def bare_seconds(model, image: torch.Tensor, size: int, overlap: float, batch: int) -> float:
    start = time.perf_counter()
    origins = slice_origins(*image.shape[-2:], size, overlap)
    for k in range(0, len(origins), batch):
        crops = [image[:, y:y + size, x:x + size] for x, y in origins[k:k + batch]]
        model(to_device(crops, CPU))
    return time.perf_counter() - start


def predict_seconds(pipeline: Pipeline, source: Path, weights: Path, out: Path) -> tuple[float, float]:
    """(predict's own clock: decode, slice, detect, merge, journal, as its img/s; the whole call, model loading
    and result files included)."""
    start = time.perf_counter()
    report = pipeline.predict(source, out, weights=weights, save_images=False)
    return report.seconds, time.perf_counter() - start


def scene(side: int, path: Path) -> None:
    """A textured background with a 30-px square every 90 px: something to detect, and a PNG that compresses."""
    rng = np.random.default_rng(0)
    small = rng.integers(40, 120, (side // 50 + 1, side // 50 + 1, 3), dtype=np.uint8)
    image = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
    for y in range(20, side - 40, 90):
        image[y:y + 30, 20:side - 40] = image[y:y + 30, 20:side - 40] // 2
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def peak_rss_mb(source: Path, out: Path, weights: Path) -> float:
    code = ("import resource, sys\nfrom cvpipe.pipeline import Pipeline\n"
            f"p = Pipeline.from_yaml({str(PIPELINE)!r}, {OVERRIDES!r})\n"
            f"p.predict({str(source)!r}, {str(out)!r}, weights={str(weights)!r}, save_images=False)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="a treecrowns_faster_rcnn checkpoint (default: the latest run's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pipeline = Pipeline.from_yaml(PIPELINE, OVERRIDES)
    weights = args.weights or default_weights(pipeline.config)
    tiling = pipeline.config.tiling
    size = slice_size(pipeline.config)
    val = fetch_dataset("treecrowns") / "val"
    (image_path,) = sorted(val.glob("*.png"))
    model, _ = load_trained(pipeline.config, weights, CPU)
    image = image_tensor(read_image(image_path))
    bare_seconds(model, image, size, tiling.overlap, tiling.batch)  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[str, list[float]] = {"bare": [], "predict": [], "predict_call": []}
        for k in range(args.repeats):
            times["bare"].append(bare_seconds(model, image, size, tiling.overlap, tiling.batch))
            loop, call = predict_seconds(pipeline, val, weights, Path(tmp) / f"p{k}")
            times["predict"].append(loop)
            times["predict_call"].append(call)
        ratio = statistics.median(times["bare"]) / statistics.median(times["predict"])
        slices = len(slice_origins(*image.shape[-2:], size, tiling.overlap))
        print(f"{image_path.name} ({image.shape[2]}×{image.shape[1]}), {slices} slices of {size} px, batch {tiling.batch}, "
              f"{args.repeats} alternating runs, medians:")
        print(f"  bare model over the slices  {statistics.median(times['bare']):.2f} s")
        print(f"  cvpipe predict              {statistics.median(times['predict']):.2f} s (its own clock; the whole "
              f"call with model loading and result files: {statistics.median(times['predict_call']):.2f} s)")
        print(f"  predict throughput ÷ bare = {ratio:.2f}")
        rss = {}
        for side in (5000, 10000):
            source = Path(tmp) / f"scene{side}" / f"scene_{side}.png"
            scene(side, source)
            rss[side] = peak_rss_mb(source.parent, Path(tmp) / f"out{side}", weights)
            print(f"  peak RSS, {side}×{side} px scene: {rss[side]:.0f} MB")
        print(f"  peak RSS 10,000² ÷ 5,000² = {rss[10000] / rss[5000]:.2f}")
    path = save_results("sliced_predict", {"image": image_path.name, "slices": slices, "seconds": times,
                                            "ratio": ratio, "peak_rss_mb": rss, "rss_ratio": rss[10000] / rss[5000],
                                            "weights": str(weights)})
    print(f"→ {path}")


if __name__ == "__main__":
    main()
