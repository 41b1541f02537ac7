"""`predict` throughput ÷ bare detection over the same decoded tensors.

cvpipe's side is the whole `Pipeline.predict` on the treecrowns val split (one whole aerial image, sliced as the
pipeline's `tiling:` says): discovery, decoding in loader workers, batched inference, drawing and writing annotated
images, the journal and the result files. The bare side runs the same model over the same slices of the images
already decoded into tensors (`ops.tta.detect_pipeline`, one view). Runs alternate; medians.
Needs a checkpoint: trains one briefly if the pipeline has none. Run: `python benches/predict_speed.py`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path
from rich.console import Console

from cvpipe.config import loader_workers
from cvpipe.data.fetchers import fetch_dataset
from cvpipe.data.samples import image_tensor
from cvpipe.engine.checkpoint import load_trained
from cvpipe.engine.runs import latest_run_dir
from cvpipe.io.images import discover, read_image
from cvpipe.ops.tta import detect_pipeline
from cvpipe.pipeline import Pipeline

PIPELINE = "pipelines/treecrowns_faster_rcnn.yaml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    root = fetch_dataset("treecrowns")
    quiet = Console(quiet=True)
    pipeline = Pipeline.from_yaml(PIPELINE, ["tta.enabled=false"], console=quiet)  # the bare loop runs one view
    weights = args.weights
    if weights is None:
        if latest_run_dir(pipeline.config) is None:
            Pipeline.from_yaml(PIPELINE, ["train.epochs=1"], console=quiet).fit(tensorboard=False)
        weights = pipeline._weights(None)
    source = root / "val"
    files, _ = discover(source)
    model, _ = load_trained(pipeline.config, weights, torch.device("cpu"))
    tensors = [image_tensor(read_image(f)) for f in files]
    batch = pipeline.config.eval.batch_size

    def bare() -> None:
        for i in range(0, len(tensors), batch):
            detect_pipeline(model, tensors[i : i + batch], torch.device("cpu"), pipeline.config, augment=False)

    times = {"bare": [], "predict": []}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):
            start = time.perf_counter()
            bare()
            times["bare"].append(time.perf_counter() - start)
            start = time.perf_counter()
            pipeline.predict(source, out, weights=weights)
            times["predict"].append(time.perf_counter() - start)
    bare_ips = len(files) / statistics.median(times["bare"])
    ours_ips = len(files) / statistics.median(times["predict"])
    print(f"{len(files)} treecrowns val image(s), sliced, batch {batch}, workers {loader_workers(pipeline.config.train.workers)}, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats, medians")
    print(f"bare sliced detection on decoded tensors: {bare_ips:6.2f} img/s")
    print(f"cvpipe predict (decode+infer+write):   {ours_ips:6.2f} img/s")
    print(f"ratio predict / bare: {ours_ips / bare_ips:.3f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB")
    save_results("predict_speed", {"images": len(files), "batch": batch, "bare_img_s": bare_ips,
                                   "predict_img_s": ours_ips, "ratio": ours_ips / bare_ips, "peak_rss_mib": peak})


if __name__ == "__main__":
    main()
