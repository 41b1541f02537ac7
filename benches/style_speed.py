"""Seconds per image of fast style transfer (one forward pass of the transformation network) ÷ Gatys et al.'s
optimisation (L-BFGS, `--steps` iterations), same photo, same sizes, CPU.

The forward pass costs the same trained or not, so the network of `pipelines/style_fast.yaml` is timed as
built (median of `--repeats`); Gatys is timed once per size (its iterations are the repeats).
Run: `python benches/style_speed.py [--sizes 256 512] [--steps 100]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.models.style import GatysLoss, read_style, stylize_image, vgg_features


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    photos = fetch_dataset("photos")
    device = torch.device("cpu")
    network = build_model(load_pipeline("pipelines/style_fast.yaml", ["data.root=data/photos"]), 0).eval()
    features = vgg_features("vgg16_hed.bsds", device)
    print(f"CPU, {torch.get_num_threads()} threads; content chelsea.png, style coffee.png")
    print(f"{'size':>6} {'image':>9} {'fast s':>8} {'Gatys s':>8} {'Gatys ÷ fast':>13}")
    rows = []
    for size in args.sizes:
        content, style = read_style(photos / "chelsea.png", size, device), read_style(photos / "coffee.png", size, device)
        with torch.inference_mode():
            network(content)  # warm-up
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                network(content)
                seconds.append(time.perf_counter() - start)
        fast = statistics.median(seconds)
        loss = GatysLoss(features, content, style)
        start = time.perf_counter()
        stylize_image(loss, content, steps=args.steps)
        gatys = time.perf_counter() - start
        h, w = content.shape[-2:]
        print(f"{size:6d} {f'{w}×{h}':>9} {fast:8.3f} {gatys:8.1f} {gatys / fast:12.0f}×")
        rows.append({"size": size, "width": w, "height": h, "fast_s": fast, "gatys_s": gatys, "ratio": gatys / fast})
    save_results("style_speed", {"steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
