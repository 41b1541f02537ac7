"""The COCO SSD-MobileNetV2: cvpipe's port ÷ OpenCV DNN running the original TF graph, images/s.

Both sides do the whole job for one photo at a time (batch 1) on the CPU with the same thread count: resize
and normalise, the network, decoding and NMS, boxes in the photo's pixels. OpenCV runs its classic engine
(faster than OpenCV 5's default here; both are printed). cvpipe runs each inference backend (pytorch:
eager, channels-last is its default layout; compile: torch.compile with frozen weights; onnxruntime: the whole
exported graph, NMS included); each is checked to give the eager detections. Every contender runs in fresh
processes, alternating; medians of all passes.
Run: `python benches/ssd_vs_opencv.py [--threads 2] [--rounds 3] [--passes 5]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path
from torchvision.ops import box_iou

from cvpipe.config import BACKENDS
from cvpipe.data.fetchers import fetch_dataset
from cvpipe.engine.runtime import inference_model
from cvpipe.io.images import read_image
from cvpipe.loading import load_pipeline
from cvpipe.models.tf_ssd import opencv_reference_files
from cvpipe.ops.inference import detect
from cvpipe.paths import weights_dir

PIPELINE = "pipelines/coco_ssd_mobilenet_v2.yaml"
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png", "china.jpg", "grace_hopper.jpg"]


def opencv_runner(engine: int, photos: list[np.ndarray]) -> Callable[[], list[np.ndarray]]:
    graph, text = opencv_reference_files(weights_dir())
    net = cv2.dnn.readNetFromTensorflow(str(graph), str(text), engine)
    bgr = [np.ascontiguousarray(p[..., ::-1]) for p in photos]

    def run() -> list[np.ndarray]:
        out = []
        for image in bgr:
            net.setInput(cv2.dnn.blobFromImage(image, size=(300, 300), swapRB=True))
            out.append(net.forward())
        return out

    return run


def cvpipe_runner(backend: str, photos: list[np.ndarray]) -> Callable[[], list[dict]]:
    config = load_pipeline(PIPELINE)
    device = torch.device("cpu")
    model = inference_model(config, None, device, backend).model
    tensors = [torch.from_numpy(p).permute(2, 0, 1) for p in photos]
    return lambda: [detect(model, [t], device)[0] for t in tensors]


def same_detections(a: list[dict], b: list[dict], conf: float = 0.3) -> str:
    """'yes' when both give the same classes with boxes IoU ≥ 0.99 and scores within 0.01 (scores ≥ conf)."""
    for x, y in zip(a, b):
        kx, ky = x["scores"] >= conf, y["scores"] >= conf
        if sorted(x["labels"][kx].tolist()) != sorted(y["labels"][ky].tolist()):
            return "NO (classes differ)"
        if kx.any():
            iou = box_iou(x["boxes"][kx], y["boxes"][ky])
            best = iou.argmax(1)
            if iou.max(1).values.min() < 0.99 or (x["scores"][kx] - y["scores"][ky][best]).abs().max() > 0.01:
                return "NO (boxes or scores differ)"
    return "yes"


CONTENDERS = ("opencv classic", "opencv default", *(f"cvpipe {b}" for b in BACKENDS))


def runner(name: str, photos: list[np.ndarray]) -> Callable[[], list]:
    if name.startswith("opencv"):
        return opencv_runner(cv2.dnn.ENGINE_CLASSIC if name.endswith("classic") else cv2.dnn.ENGINE_AUTO, photos)
    return cvpipe_runner(name.removeprefix("cvpipe "), photos)


def worker(name: str, passes: int, threads: int, check: Path | None) -> None:
    """One contender in a fresh process: prints the seconds of each pass over the photos as JSON."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    photos = [read_image(fetch_dataset("photos") / photo) for photo in PHOTOS]
    run = runner(name, photos)
    first = run()  # compiles / builds the session
    if check is not None:
        torch.save(first, check)
    seconds = []
    for _ in range(passes):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per contender, alternating")
    parser.add_argument("--passes", type=int, default=5, help="passes over the photos per process")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--check", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.passes, args.threads, args.check)

    # Each contender runs in its own process, as a user runs it: thread pools of OpenCV, ONNX Runtime and
    # PyTorch sharing one process would spin against each other and measure that instead.
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    outputs: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name in CONTENDERS:
                check = Path(tmp) / f"{name.replace(' ', '_')}.pt"
                cmd = [sys.executable, __file__, "--worker", name, "--passes", str(args.passes),
                       "--threads", str(args.threads), "--check", str(check)]
                result = subprocess.run(cmd, capture_output=True, text=True, check=True)
                times[name] += json.loads(result.stdout.strip().splitlines()[-1])
                if name.startswith("cvpipe"):
                    outputs[name] = torch.load(check, weights_only=True)

    base = len(PHOTOS) / statistics.median(times["opencv classic"])
    print(f"{len(PHOTOS)} photos, batch 1, CPU, {args.threads} threads; {args.rounds} processes × {args.passes} "
          "passes per contender, medians; full latency (resize, network, decode, NMS)")
    print(f"{'':18} {'img/s':>7} {'ms/img':>7} {'÷ opencv classic':>17}  same detections as pytorch")
    rows = []
    for name, samples in times.items():
        ips = len(PHOTOS) / statistics.median(samples)
        same = same_detections(outputs["cvpipe pytorch"], outputs[name]) if name in outputs else ""
        print(f"{name:18} {ips:7.2f} {1000 / ips:7.1f} {ips / base:17.2f}  {same}")
        rows.append({"contender": name, "img_s": ips, "ms_per_img": 1000 / ips, "ratio": ips / base, "same": same})
    save_results("ssd_vs_opencv", {"photos": len(PHOTOS), "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
