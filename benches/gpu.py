"""The GPU path, per detection head at 640 px with AMP: inference images/s at batch 1 and 16, training images/s,
peak GPU memory; how busy the GPU is during `predict` (the union of its kernels' time ÷ wall time, from the
profiler); and whether evaluating the tree-crowns val split on the GPU gives the CPU's COCO stats (within 1e-3).

Without CUDA it prints that the GPU part is skipped and exits 0. `--device cpu --size 128 --iters 2` runs the
same code on the CPU at a toy size, to check it works where no GPU is lent.
Run: `python benches/gpu.py [--weights runs/.../best.pt]`; results in benches/results/gpu.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path
from rich.console import Console

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.engine.data import load_split, make_loader
from cvpipe.engine.fit import TrainStep
from cvpipe.engine.optim import build_optimizer
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.ops.inference import detect
from cvpipe.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
HEADS = {  # pipeline, the overrides that make it take 640-px images
    "faster_rcnn": ("treecrowns_faster_rcnn", lambda s: [f"model.head.min_size={s}", f"model.head.max_size={s}",
                                                         f"model.head.train_sizes=[{s}]"]),
    "ssd": ("treecrowns_ssd", lambda s: [f"model.head.size={s}", "augment.train=[]"]),
    "yolo": ("treecrowns_yolo", lambda s: [f"model.head.size={s}", "augment.train=[]"]),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference_rate(model, device: torch.device, size: int, batch: int, iters: int) -> float:
    images = [torch.randint(0, 255, (3, size, size), dtype=torch.uint8) for _ in range(batch)]
    detect(model, images, device, amp=True)  # warm-up (cuDNN picks its algorithms)
    seconds = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        detect(model, images, device, amp=True)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return batch / statistics.median(seconds)


def training_rate(config, device: torch.device, iters: int) -> tuple[float, float]:
    """(images/s, peak GPU memory in GiB) for TrainStep with AMP on the real train tiles at the head's size."""
    train_set, _ = load_split(config, "train")
    batches = [(images, targets) for images, targets, _ in make_loader(config, train_set, "train")]
    model = build_model(config, len(train_set.classes)).to(device).train()
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config.train)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    step = TrainStep(model, optimizer, scaler, device, amp=use_amp, grad_clip=config.train.grad_clip)
    step(*batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for i in range(iters):
        synchronize(device)
        start = time.perf_counter()
        step(*batches[i % len(batches)])
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return config.train.batch_size / statistics.median(seconds), memory


def busy_share(pipeline: Pipeline, source: Path, out: Path, weights: Path | None) -> float:
    """The share of `predict`'s wall time in which at least one GPU kernel runs (union of kernel intervals)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        pipeline.predict(source, out, weights=weights, save_images=False)
        wall = time.perf_counter() - start
    intervals = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                       if e.device_type.name == "CUDA")
    busy, end = 0.0, float("-inf")
    for a, b in intervals:  # microseconds
        if b > end:
            busy += b - max(a, end)
            end = b
    return busy / 1e6 / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto", help="auto (CUDA or skip) | cuda | cuda:N | cpu (a smoke run)")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--weights", type=Path, default=None, help="a trained treecrowns_faster_rcnn checkpoint "
                        "for the eval parity check (default: a fresh model; the stats still must agree)")
    args = parser.parse_args()
    if args.device == "auto" and not torch.cuda.is_available():
        print("GPU part skipped: no CUDA device here (torch.cuda.is_available() is False). "
              "`--device cpu --size 128 --iters 2` runs the same code on the CPU as a check.")
        return
    device = torch.device("cuda" if args.device == "auto" else args.device)
    fetch_dataset("treecrowns", REPO / "data")
    quiet = Console(quiet=True)
    rows = []
    for head, (name, sized) in HEADS.items():
        overrides = [*sized(args.size), f"train.device={device}", "train.workers=0", "train.batch_size=8"]
        config = load_pipeline(REPO / "pipelines" / f"{name}.yaml", overrides)
        model = build_model(config, 1).to(device).eval()
        if config.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        row = {"head": head, "size": args.size,
               "infer_b1_img_s": inference_rate(model, device, args.size, 1, args.iters),
               "infer_b16_img_s": inference_rate(model, device, args.size, 16, max(2, args.iters // 4))}
        row["train_img_s"], row["train_peak_gib"] = training_rate(config, device, args.iters)
        rows.append(row)
        print(f"{head:12} {args.size}px: inference {row['infer_b1_img_s']:7.1f} img/s (batch 1), "
              f"{row['infer_b16_img_s']:7.1f} (batch 16); training {row['train_img_s']:6.1f} img/s, "
              f"peak {row['train_peak_gib']:.2f} GiB", flush=True)
    import tempfile

    pipeline_file = REPO / "pipelines" / "treecrowns_faster_rcnn.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if weights is None:
            config = load_pipeline(pipeline_file)
            from cvpipe.engine.checkpoint import save_checkpoint

            weights = tmp / "fresh.pt"
            torch.manual_seed(0)
            save_checkpoint(weights, {"model": build_model(config, 1).state_dict(), "classes": config.data.classes})
        plain = ["tta.enabled=false"]  # the model's own throughput and stats, one view per image
        on = {d: Pipeline.from_yaml(pipeline_file, [f"train.device={d}", f"output.dir={tmp}", *plain], console=quiet)
              for d in (str(device), "cpu")}
        stats = {d: p.evaluate(weights, json_path=tmp / d / "metrics.json").stats for d, p in on.items()}
        difference = max(abs(stats[str(device)][k] - stats["cpu"][k]) for k in stats["cpu"])
        share = busy_share(on[str(device)], REPO / "data" / "treecrowns" / "val", tmp / "predict", weights) \
            if device.type == "cuda" else None
    print(f"eval on {device} vs cpu: largest difference of the 12 COCO stats {difference:.1e} (AP50 "
          f"{stats[str(device)]['AP50']:.4f} vs {stats['cpu']['AP50']:.4f})")
    if share is not None:
        print(f"predict on {device}: GPU busy {100 * share:.0f} % of the wall time")
    save_results("gpu", {"device": str(device), "rows": rows, "eval_stat_difference": difference,
                         "predict_gpu_busy_share": share})


if __name__ == "__main__":
    main()
