"""`cvpipe predict` over growing folders: throughput and peak memory at 1k, 3k and 10k images.

The folders hold real photo content: random crops (160–320 px, JPEG) of the sample photos, in sub-folders of
500, with one corrupt file per thousand. Each size runs `predict` (the COCO SSD, annotated images on) in a
fresh process that reports its own peak RSS (and its loader workers' with --workers); the baseline is the smallest folder:
peak RSS at N images ÷ at 1k should stay near 1 (bounded memory), images/s ÷ at 1k near 1 (no slow-down).
Run: `python benches/predict_scale.py [--sizes 1000 3000 10000] [--workers 0]`; results in
benches/results/predict_scale.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import save_results  # benches/common.py: the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml"


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    from cvpipe.data.fetchers import fetch_dataset
    from cvpipe.io.images import read_image

    photos = [read_image(p) for p in sorted(fetch_dataset("photos", REPO / "data").glob("*.[jp][pn]g"))]
    rng = np.random.default_rng(seed)
    for i in range(n):
        path = root / f"part{i // 500:03d}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i % 1000 == 999:
            path.write_bytes(b"\xff\xd8 truncated")  # a corrupt JPEG: reported in skipped.txt, the run goes on
            continue
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(160, min(320, *photo.shape[:2]) + 1))
        y, x = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
        crop = np.ascontiguousarray(photo[y : y + side, x : x + side, ::-1])
        cv2.imwrite(str(path), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])


def worker(source: Path, out: Path, workers: int) -> None:
    """One predict run in this process; prints images, seconds, skipped and peak RSS (self, children) as JSON.
    The children's peak means the loader workers' only with --workers > 0 (any fork, even ldconfig's, starts at
    the parent's size)."""
    from rich.console import Console

    from cvpipe.pipeline import Pipeline

    pipeline = Pipeline.from_yaml(PIPELINE, [f"train.workers={workers}", f"output.dir={out.parent}"],
                                  console=Console(quiet=True))
    start = time.perf_counter()
    report = pipeline.predict(source, out)
    seconds = time.perf_counter() - start
    print(json.dumps({"processed": report.processed, "skipped": len(report.skipped), "seconds": seconds,
                      "images_per_second": report.processed / seconds,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "peak_rss_children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes (train.workers)")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker, args.workers)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.sizes):
            source, out = Path(tmp) / f"images{n}", Path(tmp) / f"out{n}"
            make_folder(source, n)
            result = subprocess.run([sys.executable, __file__, "--worker", str(source), str(out), "--workers",
                                     str(args.workers)], capture_output=True, text=True, check=True)
            row = {"images": n, **json.loads(result.stdout.strip().splitlines()[-1])}
            row["results_mib"] = (out / "results.json").stat().st_size / 2**20
            rows.append(row)
            workers = f" (loader workers {row['peak_rss_children_mib']:.0f} MiB)" if args.workers else ""
            print(f"{n:6d} images: {row['images_per_second']:6.1f} img/s, peak RSS {row['peak_rss_mib']:7.0f} MiB"
                  f"{workers}, {row['skipped']} skipped, results.json {row['results_mib']:.1f} MiB", flush=True)
    base = rows[0]
    print(f"\n{'images':>7} {'img/s':>7} {'÷ first':>8} {'peak RSS MiB':>13} {'÷ first':>8}")
    for row in rows:
        row["throughput_ratio"] = row["images_per_second"] / base["images_per_second"]
        row["rss_ratio"] = row["peak_rss_mib"] / base["peak_rss_mib"]
        print(f"{row['images']:7d} {row['images_per_second']:7.1f} {row['throughput_ratio']:8.2f} "
              f"{row['peak_rss_mib']:13.0f} {row['rss_ratio']:8.2f}")
    save_results("predict_scale", {"workers": args.workers, "rows": rows})


if __name__ == "__main__":
    main()
