"""The tree-crown YOLO's `predict` end to end ÷ Ultralytics' default `predict`, on the same files, in the same run.

Files: the 42 tiles (400 px) of the tree-crown val image as PNG (benches/inference_speed.py cuts them). Each
contender runs in fresh processes, alternating, `--rounds` processes × `--passes` passes over the files after one
warm-up pass; medians; 2 threads (`--threads`).
- Ultralytics: `YOLO(MODEL).predict(files, stream=True)` with its defaults (640-px letterbox, conf 0.25, NMS
  IoU 0.7, batch 1), every result consumed; and once more at `imgsz=448`, the input size of cvpipe's YOLO. MODEL
  is `--ultralytics-model` (default `yolo11n.yaml`: YOLO11n built from its definition, untrained, because the
  model hubs are out of reach here; an untrained model finds next to nothing, so its NMS costs it less than a
  trained one's would, which favours it). Ultralytics is AGPL-3.0 and not a cvpipe dependency: install it apart,
  e.g. `pip install --target /tmp/ultralytics --no-deps ultralytics ultralytics-thop py-cpuinfo`, and pass
  `--ultralytics-path /tmp/ultralytics`.
- cvpipe: `Pipeline.predict(tiles, save_images=False, backend=...)` (what `cvpipe predict --no-images` runs:
  decoding in loader workers, the model, the result files), timed by its own clock, with `--weights` (a
  `treecrowns_yolo` best.pt) on PyTorch eager, ONNX Runtime FP32, and each export given by `--export` (e.g. the
  OpenVINO INT8 file `cvpipe benchmark` marks fastest verified, which `--backend auto` then runs).
Run: `python benches/yolo_vs_ultralytics.py --weights runs/treecrowns_yolo/best.pt --ultralytics-path DIR
[--export runs/treecrowns_yolo/benchmark/best/best.int8.xml] [--rounds 3] [--passes 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path
from inference_speed import val_tiles
from rich.console import Console

PIPELINE = "pipelines/treecrowns_yolo.yaml"
SETTINGS = ["tta.enabled=false", "tiling.mode=never"]  # one view of each 400-px tile, as Ultralytics sees them


def worker(runner: str, model_file: str, tiles: Path, imgsz: int, passes: int, threads: int,
           ultralytics_path: str) -> None:
    """One contender in a fresh process: `runner` (ultralytics, or cvpipe's --backend) on `model_file`; seconds per
    pass over the tiles (JSON on the last line)."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    files = sorted(tiles.glob("*.png"))
    seconds = []
    if runner == "ultralytics":
        sys.path.insert(0, ultralytics_path)
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        model = YOLO(model_file)
        for k in range(passes + 1):  # the first pass warms up (the predictor is built on the first call)
            start = time.perf_counter()
            for _ in model.predict([str(f) for f in files], stream=True, verbose=False, device="cpu", imgsz=imgsz):
                pass
            if k:
                seconds.append(time.perf_counter() - start)
    else:
        from cvpipe.pipeline import Pipeline

        pipeline = Pipeline.from_yaml(PIPELINE, SETTINGS, console=Console(quiet=True))
        with tempfile.TemporaryDirectory() as out:
            for k in range(passes + 1):
                report = pipeline.predict(tiles, Path(out) / str(k), weights=model_file, save_images=False,
                                          backend=runner)
                if k:
                    seconds.append(report.seconds)
    print(json.dumps(seconds))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", type=Path, help="a treecrowns_yolo best.pt")
    parser.add_argument("--export", type=Path, nargs="*", default=[], help="exports of it to time too (.onnx/.xml)")
    parser.add_argument("--ultralytics-path", required=True, help="a folder Ultralytics is installed in (--target)")
    parser.add_argument("--ultralytics-model", default="yolo11n.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per contender, alternating")
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the tiles per process")
    parser.add_argument("--worker", nargs=4, metavar=("RUNNER", "MODEL", "TILES", "IMGSZ"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        runner, model_file, tiles, imgsz = args.worker
        return worker(runner, model_file, Path(tiles), int(imgsz), args.passes, args.threads, args.ultralytics_path)
    if args.weights is None:
        parser.error("--weights: a treecrowns_yolo best.pt is required")
    weights = str(args.weights.resolve())
    contenders = {"ultralytics": ("ultralytics", args.ultralytics_model, 640),  # 640: its default
                  "ultralytics imgsz=448": ("ultralytics", args.ultralytics_model, 448),  # cvpipe's input size
                  "cvpipe pytorch": ("pytorch", weights, 0),
                  "cvpipe onnxruntime fp32": ("onnxruntime", weights, 0)}
    for path in args.export:
        backend = "openvino" if path.suffix == ".xml" else "onnxruntime"
        contenders[f"cvpipe {backend} {path.name}"] = (backend, str(path.resolve()), 0)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as scratch:
        files = val_tiles(Path(scratch) / "tiles")
        for _ in range(args.rounds):
            for name, (runner, model_file, imgsz) in contenders.items():
                command = [sys.executable, __file__, "--worker", runner, model_file, str(Path(scratch) / "tiles"),
                           str(imgsz), "--passes", str(args.passes), "--threads", str(args.threads),
                           "--ultralytics-path", args.ultralytics_path]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode:
                    sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
                seconds[name] += json.loads(done.stdout.strip().splitlines()[-1])
    rates = {name: len(files) / statistics.median(values) for name, values in seconds.items()}
    base = rates["ultralytics"]
    print(f"{len(files)} tree-crown val tiles (400 px), {args.threads} threads, {args.rounds} processes × "
          f"{args.passes} passes per contender, medians")
    print(f"{'contender':44s} {'img/s':>7s} {'÷ Ultralytics':>14s}")
    for name, rate in rates.items():
        print(f"{name:44s} {rate:7.2f} {rate / base:14.2f}")
    print(f"→ {save_results('yolo_vs_ultralytics', {'threads': args.threads, 'files': len(files), 'ultralytics_model': args.ultralytics_model, 'weights': str(args.weights), 'img_s': rates, 'vs_ultralytics': {k: v / base for k, v in rates.items()}, 'seconds': seconds})}")


if __name__ == "__main__":
    main()
