"""`cvpipe predict` over growing folders: throughput and peak memory at 1k, 3k and 10k images, on the local
engine and (`--engines local ray`) on Ray Data.

The folders hold real photo content: random crops (160–320 px, JPEG) of the sample photos, in sub-folders of
500, with one corrupt file per thousand. Each size runs `predict` (the COCO SSD, annotated images on) in a
fresh process that reports its own peak RSS (and its loader workers' with --workers); the baseline is the smallest folder:
peak RSS at N images ÷ at 1k should stay near 1 (bounded memory), images/s ÷ at 1k near 1 (no slow-down).
With `ray` in `--engines`, each folder is also run with `--engine ray` on a Ray of the run's own on this machine
(its default pool: the CPUs less one as actors): ray img/s ÷ local img/s is the overhead Ray adds on one machine,
and the peak RSS of the driver and of each model actor (read from /proc while it runs) is what a process costs.
Run: `python benches/predict_scale.py [--sizes 1000 3000 10000] [--workers 0] [--engines local ray]`; results in
benches/results/predict_scale.json (predict_scale_ray.json with ray).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
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


class ActorMemory(threading.Thread):
    """The peak RSS (VmHWM) of every Ray model actor process seen while the run goes, polled from /proc."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            for status in Path("/proc").glob("[0-9]*/status"):
                try:
                    if "MapWorker" not in (status.parent / "cmdline").read_text(errors="replace"):
                        continue
                    peak = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM"))
                except (OSError, StopIteration):
                    continue
                self.peaks[int(status.parent.name)] = int(peak.split()[1]) / 1024


def worker(source: Path, out: Path, workers: int, engine: str, actors: int | None) -> None:
    """One predict run in this process; prints images, seconds, skipped and peak RSS (self, children; Ray's
    actors) as JSON. The children's peak means the loader workers' only with --workers > 0 (any fork, even
    ldconfig's, starts at the parent's size)."""
    from rich.console import Console

    from cvpipe.pipeline import Pipeline

    pipeline = Pipeline.from_yaml(PIPELINE, [f"train.workers={workers}", f"output.dir={out.parent}"],
                                  console=Console(quiet=True))
    memory = ActorMemory()
    memory.start()
    start = time.perf_counter()
    report = pipeline.predict(source, out, engine=engine, actors=actors if engine == "ray" else None)
    seconds = time.perf_counter() - start
    memory.done.set()
    print(json.dumps({"processed": report.processed, "skipped": len(report.skipped), "seconds": seconds,
                      "images_per_second": report.processed / seconds,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "peak_rss_children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                      "actor_peak_rss_mib": sorted(memory.peaks.values())}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes (train.workers)")
    parser.add_argument("--engines", nargs="+", choices=("local", "ray"), default=["local"])
    parser.add_argument("--actors", type=int, default=None, help="--engine ray's model actors (default: its own)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(Path(args.worker[0]), Path(args.worker[1]), args.workers, args.worker[2], args.actors)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.sizes):
            source = Path(tmp) / f"images{n}"
            make_folder(source, n)
            for engine in args.engines:
                out = Path(tmp) / f"out{n}_{engine}"
                result = subprocess.run([sys.executable, __file__, "--worker", str(source), str(out), engine,
                                         "--workers", str(args.workers),
                                         *(["--actors", str(args.actors)] if args.actors else [])],
                                        capture_output=True, text=True, check=True)
                row = {"images": n, "engine": engine, **json.loads(result.stdout.strip().splitlines()[-1])}
                row["results_mib"] = (out / "results.json").stat().st_size / 2**20
                rows.append(row)
                workers = f" (loader workers {row['peak_rss_children_mib']:.0f} MiB)" if args.workers else ""
                actors = (f", actors {', '.join(f'{m:.0f}' for m in row['actor_peak_rss_mib'])} MiB"
                          if row["actor_peak_rss_mib"] else "")
                print(f"{n:6d} images, {engine:5s}: {row['images_per_second']:6.1f} img/s, peak RSS "
                      f"{row['peak_rss_mib']:7.0f} MiB{workers}{actors}, {row['skipped']} skipped, results.json "
                      f"{row['results_mib']:.1f} MiB", flush=True)
    first = {engine: next(r for r in rows if r["engine"] == engine) for engine in args.engines}
    print(f"\n{'images':>7} {'engine':>6} {'img/s':>7} {'÷ first':>8} {'÷ local':>8} {'peak RSS MiB':>13} {'÷ first':>8}")
    for row in rows:
        base = first[row["engine"]]
        local = next((r for r in rows if r["images"] == row["images"] and r["engine"] == "local"), None)
        row["throughput_ratio"] = row["images_per_second"] / base["images_per_second"]
        row["rss_ratio"] = row["peak_rss_mib"] / base["peak_rss_mib"]
        if local is not None:
            row["throughput_vs_local"] = row["images_per_second"] / local["images_per_second"]
        vs_local = f"{row['throughput_vs_local']:8.2f}" if local is not None else f"{'':8s}"
        print(f"{row['images']:7d} {row['engine']:>6} {row['images_per_second']:7.1f} {row['throughput_ratio']:8.2f} "
              f"{vs_local} {row['peak_rss_mib']:13.0f} {row['rss_ratio']:8.2f}")
    name = "predict_scale_ray" if "ray" in args.engines else "predict_scale"  # the local-only figures stay apart
    save_results(name, {"workers": args.workers, "engines": args.engines, "actors": args.actors, "rows": rows})


if __name__ == "__main__":
    main()
