"""Deployment: each export cvpipe writes, timed end to end from image files, against PyTorch eager in the same run,
with its accuracy beside it.

Two models:
- the COCO SSD-MobileNetV2 (a ready model, no val split): six photos, one at a time, each contender in fresh
  processes, alternating; also OpenCV DNN running the original TF graph (the classic engine, as
  benches/ssd_vs_opencv.py). Accuracy: the share of eager's detections (score ≥ 0.5) each export finds again
  (IoU ≥ 0.5, same class) and, the other way, of its own. INT8 is calibrated on other photos than the timed
  ones (`--calibrate`; default: the two bundled photos not timed and the VOC sample photo).
- the tree-crown YOLO (`--yolo-weights best.pt` from `cvpipe train treecrowns_yolo`): the held-out
  2299×2472 image in 400-px slices; AP50 of each export on it, plain, against the checkpoint's.

End to end = decode the file, the eval transform, slicing, the model, post-processing, boxes in the image's
pixels, with the next file decoded on a thread as `cvpipe predict` and `cvpipe benchmark` do (OpenCV DNN too).
Medians over rounds × passes; ratios against eager in the same run.
Run: `python benches/deploy.py [--yolo-weights W] [--rounds 3] [--passes 3] [--threads 2]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path
from rich.console import Console
from torchvision.ops import box_iou

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.engine.export import Exporter, default_out
from cvpipe.engine.exported import load_exported
from cvpipe.engine.runtime import inference_model
from cvpipe.io.images import read_image
from cvpipe.io.prefetch import Prefetch
from cvpipe.loading import load_pipeline
from cvpipe.models.tf_ssd import opencv_reference_files
from cvpipe.paths import weights_dir

PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png", "china.jpg", "grace_hopper.jpg"]
EXPORTS = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "int8")]
RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino"}


def timed_files(pipeline: str) -> list[Path]:
    if pipeline == "coco_ssd_mobilenet_v2":
        return [fetch_dataset("photos") / name for name in PHOTOS]
    return sorted((fetch_dataset("treecrowns") / "val").glob("*.png"))


def worker(pipeline: str, weights: str, contender: str, passes: int, threads: int, check: Path) -> None:
    """One contender in a fresh process: its seconds per pass over the files (JSON), its outputs to `check`."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    files = timed_files(pipeline)
    if contender == "opencv dnn (TF graph)":
        graph, text = opencv_reference_files(weights_dir())
        net = cv2.dnn.readNetFromTensorflow(str(graph), str(text), cv2.dnn.ENGINE_CLASSIC)

        def decode(path: Path):
            return cv2.imread(str(path))

        def infer(image):
            net.setInput(cv2.dnn.blobFromImage(image, size=(300, 300), swapRB=True))
            return net.forward()
    else:
        from cvpipe.data.samples import image_tensor
        from cvpipe.ops.tta import detect_pipeline

        config = load_pipeline(pipeline, ["tta.enabled=false"])
        cpu = torch.device("cpu")
        model = (inference_model(config, Path(weights) if weights else None, cpu, "pytorch").model
                 if contender == "pytorch fp32" else load_exported(Path(contender.split(" ", 2)[2])))

        def decode(path: Path):
            return image_tensor(read_image(path))

        def infer(image):
            return detect_pipeline(model, [image], cpu, config, augment=False)[0]
    first = [infer(decode(path)) for path in files]  # warms up (sessions, caches)
    if check is not None and contender != "opencv dnn (TF graph)":
        torch.save([{"boxes": torch.from_numpy(d.boxes), "scores": torch.from_numpy(d.scores),
                     "labels": torch.from_numpy(d.labels)} for d in first], check)
    print(json.dumps(timed_passes(decode, infer, files, passes)))


def timed_passes(decode, infer, files: list[Path], passes: int) -> list[float]:
    """Seconds per pass over `files` as `cvpipe predict` runs them on 2 cores: the next file decodes on a thread
    while the model works (across passes too, as in a folder of passes × files images)."""
    seconds = []
    with Prefetch((decode(path) for _ in range(passes) for path in files), depth=1) as ahead:
        start = time.perf_counter()
        for k, image in enumerate(ahead, 1):
            infer(image)
            if k % len(files) == 0:
                seconds.append(time.perf_counter() - start)
                start = time.perf_counter()
    return seconds


def found_again(reference: list[dict], other: list[dict], conf: float = 0.5) -> float:
    """The share of `reference`'s detections scoring ≥ conf that `other` also finds (IoU ≥ 0.5, same class, any
    score ≥ conf − 0.2)."""
    hits = total = 0
    for a, b in zip(reference, other):
        ka, kb = a["scores"] >= conf, b["scores"] >= conf - 0.2
        total += int(ka.sum())
        if ka.any() and kb.any():
            iou = box_iou(a["boxes"][ka], b["boxes"][kb])
            same = a["labels"][ka][:, None] == b["labels"][kb][None]
            hits += int(((iou >= 0.5) & same).any(1).sum())
    return hits / total if total else float("nan")


def run_model(pipeline: str, weights: Path | None, calibrate: str | None, args, tmp: Path) -> dict:
    console = Console(quiet=True)
    config = load_pipeline(pipeline)
    exporter = Exporter(config, weights, console)
    contenders = {"pytorch fp32": None}
    if pipeline == "coco_ssd_mobilenet_v2":
        contenders = {"opencv dnn (TF graph)": None, **contenders}
    accuracy: dict[str, float] = {}
    dataset, _ = exporter.val_split()
    if dataset is not None:
        accuracy["pytorch fp32"] = exporter.checkpoint_score()
    for fmt, precision in EXPORTS:
        path = default_out(None, tmp / pipeline, fmt, precision)
        exporter.write(path, fmt, precision, calibrate)
        name = f"{RUNTIME[fmt]} {precision} {path}"
        contenders[name] = path
        if dataset is not None:
            accuracy[name] = exporter.score(load_exported(path))
    times: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, list] = {}
    for _ in range(args.rounds):
        for index, name in enumerate(contenders):
            check = tmp / f"{pipeline}_{index}.pt"
            check.unlink(missing_ok=True)
            cmd = [sys.executable, __file__, "--worker", pipeline, weights and str(weights) or "", name,
                   "--passes", str(args.passes), "--threads", str(args.threads), "--check", str(check)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            times[name] += json.loads(result.stdout.strip().splitlines()[-1])
            if name not in outputs and check.exists():
                outputs[name] = torch.load(check, weights_only=True)
    files = len(timed_files(pipeline))
    eager = files / statistics.median(times["pytorch fp32"])
    rows = []
    print(f"\n{pipeline}: {files} file(s), {args.threads} threads, {args.rounds} processes × {args.passes} passes "
          f"per contender, medians, end to end from files")
    stat = exporter.stat if dataset is not None else "found again / finds"
    print(f"{'contender':24} {'img/s':>8} {'× eager':>8} {stat:>20}")
    for name, samples in times.items():
        ips = files / statistics.median(samples)
        label = " ".join(name.split(" ")[:2])
        if dataset is not None:
            score = f"{accuracy[name]:.4f}"
        elif name in outputs and name != "pytorch fp32":
            score = (f"{found_again(outputs['pytorch fp32'], outputs[name]):.3f} / "
                     f"{found_again(outputs[name], outputs['pytorch fp32']):.3f}")
        else:
            score = ""
        print(f"{label:24} {ips:8.2f} {ips / eager:8.2f} {score:>20}")
        rows.append({"contender": label, "img_s": ips, "vs_eager": ips / eager, "accuracy": score,
                     "seconds": samples})
    return {"pipeline": pipeline, "weights": str(weights) if weights else None, "files": files,
            "accuracy_stat": stat, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--yolo-weights", type=Path, help="a treecrowns_yolo best.pt (the YOLO part runs with it)")
    parser.add_argument("--calibrate", default=None,
                        help="the COCO SSD's INT8 calibration images (default: the bundled photos not timed here)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per contender, alternating")
    parser.add_argument("--passes", type=int, default=3, help="passes over the files per process")
    parser.add_argument("--worker", nargs=3, metavar=("PIPELINE", "WEIGHTS", "CONTENDER"), help=argparse.SUPPRESS)
    parser.add_argument("--check", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker, args.passes, args.threads, args.check)
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        others = Path(tmp) / "calibration"
        others.mkdir()
        for path in [*sorted(fetch_dataset("photos").iterdir()), *sorted(fetch_dataset("voc-sample").rglob("*.jpg"))]:
            if path.suffix in (".jpg", ".png") and path.name not in PHOTOS:
                shutil.copy(path, others / path.name)
        results.append(run_model("coco_ssd_mobilenet_v2", None, args.calibrate or str(others), args, Path(tmp)))
        if args.yolo_weights:
            results.append(run_model("treecrowns_yolo", args.yolo_weights.resolve(), None, args, Path(tmp)))
    print(f"→ {save_results('deploy', {'threads': args.threads, 'models': results})}")


if __name__ == "__main__":
    main()
