"""Inference speed per head: `cvpipe predict` end to end from the files on each backend, the bare model loop before
and after BatchNorm folding, where the time goes, and GFLOP/s against this CPU's matmul peak.

Images: the 42 tiles (400 px, no overlap) of the tree-crown val image, as the earlier fetch cut them, written as
PNG to a temporary folder. Every contender runs once per round, alternating, `--rounds` rounds; medians.
- predict: `Pipeline.predict(..., save_images=False, backend=B)` (what `cvpipe predict --no-images --backend B`
  runs): discovery, decoding in loader workers, inference, the journal and the result files. "whole call" counts
  loading the model (and, for onnxruntime, the cached export and auto's check); "own clock" is predict's loop.
- bare: `detect(model, batch)` on tensors decoded beforehand; "unfused" is the eager model as it was before BN
  folding, at batch 1 and at the pipelines' former eval.batch_size 4.
- breakdown (eager, folded, batch 1): decode (read_image), the model (`detect`: within it the resize and the
  NMS, from torch.profiler), drawing (draw_sample) and writing (write_image PNG).
- GFLOP/s: 2 × MACs (cvpipe inspect's count at the tile size) × img/s of the bare folded model, ÷ the peak of a
  float32 matmul measured in the same run (torch.mm, 2048², best of the rounds).
Weights: a checkpoint per pipeline (`--weights yolo=runs/.../best.pt`); without one, the pipeline's ImageNet
backbone with a fresh head (the COCO SSD has its own), which is what the timing needs: the same graph and NMS.
- the CPU batch rule: a classifier's and an FCN's bare folded img/s at batch 1, 4 and 16 (random images).
Run: `python benches/inference_speed.py [--rounds 3] [--heads yolo ssd faster_rcnn] [--weights HEAD=PATH ...]
[--no-batch-rule]`.
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path
from rich.console import Console

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.data.samples import image_tensor
from cvpipe.data.tiling import tile_starts
from cvpipe.engine.checkpoint import load_trained, save_checkpoint
from cvpipe.engine.runtime import fold_batchnorm
from cvpipe.io.images import discover, read_image, write_image
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.models.inspect import profile
from cvpipe.ops.inference import detect
from cvpipe.pipeline import Pipeline
from cvpipe.viz.draw import draw_sample

PIPELINES = {"yolo": "pipelines/treecrowns_yolo.yaml", "ssd": "pipelines/treecrowns_ssd.yaml",
             "faster_rcnn": "pipelines/treecrowns_faster_rcnn.yaml"}
BACKENDS = {"yolo": ("auto", "pytorch", "onnxruntime", "compile"), "ssd": ("auto", "pytorch", "onnxruntime", "compile"),
            "faster_rcnn": ("auto", "pytorch", "onnxruntime")}
SETTINGS = ["tta.enabled=false", "tiling.mode=never"]  # one view of each 400-px tile, as the bare loop
CPU = torch.device("cpu")


def val_tiles(folder: Path) -> list[Path]:
    """The 42 tiles of the tree-crown val image (400 px, no overlap, the last row and column flush)."""
    files, _ = discover(fetch_dataset("treecrowns") / "val")
    image = read_image(files[0])
    h, w = image.shape[:2]
    for y in tile_starts(h, 400, 0):
        for x in tile_starts(w, 400, 0):
            write_image(folder / f"tile_x{x}_y{y}.png", image[y:y + 400, x:x + 400])
    return sorted(folder.glob("*.png"))


def matmul_peak(rounds: int, n: int = 2048) -> float:
    """GFLOP/s of a float32 n × n matmul on this CPU with torch's threads: best of `rounds` medians of 5."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(rounds):
        times = []
        for _ in range(5):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        best = max(best, 2 * n**3 / statistics.median(times) / 1e9)
    return best


def checkpoint_for(head: str, given: Path | None, folder: Path) -> Path:
    if given is not None:
        return given
    config = load_pipeline(PIPELINES[head], SETTINGS)
    torch.manual_seed(0)
    path = folder / f"{head}.pt"
    save_checkpoint(path, {"model": build_model(config, 1, pretrained=True).state_dict(), "classes": ["Tree"]})
    return path


def breakdown(model, files: list[Path], classes: list[str]) -> dict[str, float]:
    """Milliseconds per image in each stage, eager and folded, batch 1."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    stages = {"decode": 0.0, "model": 0.0, "draw": 0.0, "write": 0.0}
    with tempfile.TemporaryDirectory() as out:
        for k, f in enumerate(files):
            start = time.perf_counter()
            image = image_tensor(read_image(f))
            stages["decode"] += time.perf_counter() - start
            start = time.perf_counter()
            det = detect(model, [image], CPU)[0]
            stages["model"] += time.perf_counter() - start
            start = time.perf_counter()
            keep = det["scores"] >= 0.25
            picture = draw_sample(image.permute(1, 2, 0).numpy(), det["boxes"][keep].numpy(),
                                  det["labels"][keep].numpy(), classes, scores=det["scores"][keep].numpy())
            stages["draw"] += time.perf_counter() - start
            start = time.perf_counter()
            write_image(Path(out) / f"{k}.png", picture)
            stages["write"] += time.perf_counter() - start
    images = [image_tensor(read_image(f)) for f in files[:8]]
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for image in images:
            detect(model, [image], CPU)
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(ops.values())
    nms = sum(v for k, v in ops.items() if "nms" in k)
    resize = sum(v for k, v in ops.items() if "upsample" in k or "resize" in k or "interpolate" in k)
    per_image = {name: 1000 * seconds / len(files) for name, seconds in stages.items()}
    per_image["model: NMS"] = per_image["model"] * nms / total
    per_image["model: resize"] = per_image["model"] * resize / total
    return per_image


BATCH_RULE = {"classify": ("pipelines/faces_classify.yaml", 224), "segment": ("pipelines/nuclei_fcn.yaml", 256)}


def batch_rule(rounds: int) -> dict:
    """img/s of the bare folded classifier and FCN at batch 1, 4 and 16 on random images: what the per-task CPU
    batch (tasks/base.py `cpu_batch`) rests on, beside the detectors' batch 1 vs 4 above."""
    from cvpipe.engine.checkpoint import _for_inference
    from cvpipe.ops.inference import classify, segment

    found = {}
    for task, (path, side) in BATCH_RULE.items():
        config = load_pipeline(path)
        model = _for_inference(build_model(config, 2, pretrained=True), config, CPU)
        fold_batchnorm(model, config)
        run = classify if task == "classify" else segment
        images = [torch.randint(0, 255, (3, side, side), dtype=torch.uint8) for _ in range(16)]
        times: dict[int, list[float]] = {1: [], 4: [], 16: []}
        for batch in times:
            run(model, images[:batch], CPU)
        for _ in range(rounds):
            for batch in times:
                start = time.perf_counter()
                for i in range(0, len(images), batch):
                    run(model, images[i:i + batch], CPU)
                times[batch].append(len(images) / (time.perf_counter() - start))
        found[task] = {batch: statistics.median(v) for batch, v in times.items()}
        print(f"{task} ({path}, {side} px, bare folded): "
              + ", ".join(f"batch {b} {v:.1f} img/s" for b, v in found[task].items()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heads", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--weights", nargs="*", default=[], metavar="HEAD=PATH")
    parser.add_argument("--no-batch-rule", action="store_true", help="skip the classifier and FCN batch sizes")
    args = parser.parse_args()
    given = {k: Path(v) for k, v in (item.split("=", 1) for item in args.weights)}
    quiet = Console(quiet=True)
    results: dict = {"threads": torch.get_num_threads(), "heads": {}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        files = val_tiles(scratch / "tiles")
        peak = matmul_peak(args.rounds)
        results["matmul_peak_gflops"] = peak
        print(f"{len(files)} tree-crown val tiles (400 px); {torch.get_num_threads()} threads; "
              f"float32 matmul peak {peak:.1f} GFLOP/s; {args.rounds} rounds, medians")
        for head in args.heads:
            weights = checkpoint_for(head, given.get(head), scratch)
            pipeline = Pipeline.from_yaml(PIPELINES[head], SETTINGS, console=quiet)
            config = pipeline.config
            unfused, classes = load_trained(config, weights, CPU)
            folded = copy.deepcopy(unfused)
            fold_batchnorm(folded, config)
            tensors = [image_tensor(read_image(f)) for f in files]
            bare = {"bare unfused, batch 1": (unfused, 1), "bare unfused, batch 4": (unfused, 4),
                    "bare folded, batch 1": (folded, 1)}
            times: dict[str, list[float]] = {name: [] for name in bare}
            times |= {f"predict {b} (whole call)": [] for b in BACKENDS[head]}
            own: dict[str, list[float]] = {b: [] for b in BACKENDS[head]}
            chosen = {}
            for backend in BACKENDS[head]:  # warm-up: compile's first build, the ONNX export into the cache
                pipeline.predict(scratch / "tiles", scratch / f"warm_{head}_{backend}", weights=weights,
                                 save_images=False, backend=backend)
            for r in range(args.rounds):
                for name, (model, batch) in bare.items():
                    start = time.perf_counter()
                    for i in range(0, len(tensors), batch):
                        detect(model, tensors[i:i + batch], CPU)
                    times[name].append(time.perf_counter() - start)
                for backend in BACKENDS[head]:
                    out = scratch / f"out_{head}_{backend}_{r}"
                    console = Console(record=True, file=io.StringIO(), width=300)
                    pipeline.console = console
                    start = time.perf_counter()
                    report = pipeline.predict(scratch / "tiles", out, weights=weights, save_images=False,
                                              backend=backend)
                    times[f"predict {backend} (whole call)"].append(time.perf_counter() - start)
                    own[backend].append(report.seconds)
                    line = next((t for t in console.export_text().splitlines() if t.startswith("backend:")), "")
                    chosen[backend] = line.removeprefix("backend: ")
            ips = {name: len(files) / statistics.median(v) for name, v in times.items()}
            ips |= {f"predict {b} (own clock)": len(files) / statistics.median(v) for b, v in own.items()}
            _, totals = profile(folded, (3, 400, 400), list_input=True)
            gflops = 2 * totals["macs"] / 1e9 * ips["bare folded, batch 1"]
            parts = breakdown(folded, files, classes)
            results["heads"][head] = {"img_s": ips, "gmacs_per_image": totals["macs"] / 1e9, "gflops": gflops,
                                      "of_peak": gflops / peak, "breakdown_ms": parts, "auto": chosen.get("auto")}
            print(f"\n{head} ({PIPELINES[head]}, {'weights ' + str(given[head]) if head in given else 'fresh head'}):"
                  f" {totals['macs'] / 1e9:.2f} GMACs per 400-px tile")
            for name, value in sorted(ips.items(), key=lambda kv: -kv[1]):
                print(f"  {name:38s} {value:6.2f} img/s")
            print(f"  auto chose: {chosen.get('auto')}")
            print(f"  bare folded ÷ bare unfused (batch 1): {ips['bare folded, batch 1'] / ips['bare unfused, batch 1']:.2f}")
            print(f"  GFLOP/s achieved (bare folded): {gflops:.1f} = {gflops / peak:.2f} of the matmul peak")
            print("  ms per image: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    if not args.no_batch_rule:
        results["batch_rule"] = batch_rule(args.rounds)
    save_results("inference_speed", results)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
