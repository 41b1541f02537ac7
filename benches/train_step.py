"""Training-loop overhead: cvpipe's TrainStep ÷ a plain torchvision-style loop on the same model and batches.

Both run the treecrowns Faster R-CNN pipeline's model on the same augmented batches, prepared once (so
data loading is out of the picture); cvpipe's step adds device transfer, grad clipping and loss logging.
Steps alternate between the two in blocks so machine noise hits both alike. Also prints images/s and the
process's peak RSS. Run: `python benches/train_step.py [--steps N]`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.engine.data import load_split, make_loader
from cvpipe.engine.fit import TrainStep
from cvpipe.engine.optim import build_optimizer
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6, help="timed steps per block")
    parser.add_argument("--blocks", type=int, default=3)
    args = parser.parse_args()
    fetch_dataset("treecrowns")
    config = load_pipeline("pipelines/treecrowns_faster_rcnn.yaml", ["train.workers=0"])
    train_set, _ = load_split(config, "train")
    batches = [(images, targets) for images, targets, _ in make_loader(config, train_set, "train")]
    torch.manual_seed(0)
    model = build_model(config, len(train_set.classes)).train()
    optimizer = build_optimizer(model, config.train)
    step = TrainStep(model, optimizer, torch.amp.GradScaler("cuda", enabled=False), torch.device("cpu"),
                     amp=False, grad_clip=config.train.grad_clip)

    def bare(images, targets):  # torchvision references' train_one_epoch, minus logging
        images = [image.float() / 255 for image in images]
        loss_dict = model(images, targets)
        losses = sum(loss_dict.values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()

    times = {"bare": [], "cvpipe": []}
    for i in range(2):  # warm-up
        bare(*batches[i % len(batches)])
        step(*batches[i % len(batches)])
    for _ in range(args.blocks):
        for name, fn in (("bare", bare), ("cvpipe", step)):
            for i in range(args.steps):
                start = time.perf_counter()
                fn(*batches[i % len(batches)])
                times[name].append(time.perf_counter() - start)
    batch = config.train.batch_size
    bare_ips = batch / statistics.median(times["bare"])
    ours_ips = batch / statistics.median(times["cvpipe"])
    print(f"treecrowns Faster R-CNN, batch {batch}, {torch.get_num_threads()} threads, "
          f"{args.blocks}×{args.steps} steps each, medians")
    print(f"plain torchvision loop: {bare_ips:6.2f} img/s  ({statistics.median(times['bare']):.3f} s/step)")
    print(f"cvpipe TrainStep:       {ours_ips:6.2f} img/s  ({statistics.median(times['cvpipe']):.3f} s/step)")
    print(f"ratio cvpipe / plain: {ours_ips / bare_ips:.3f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB")
    save_results("train_step", {"batch": batch, "plain_img_s": bare_ips, "cvpipe_img_s": ours_ips,
                                "ratio": ours_ips / bare_ips, "peak_rss_mib": peak})


if __name__ == "__main__":
    main()
