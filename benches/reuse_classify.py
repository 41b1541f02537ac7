"""Classification with the ImageNet classifier's rows for shared classes (`model.head.reuse_classes`) against a
fresh head, at 1, 5 and 20 training images per class.

Data: six of the sample photos whose subjects are ImageNet classes (coffee → espresso, chelsea → Egyptian cat,
china → palace, flower → daisy, rocket → missile, motorcycle → moped), as class folders of random crops (30–100 %
of the photo's side, JPEG): N per class for train, 10 others per class for val. Real photos, but one photo per
class, so val crops resemble train crops: the figures show how far each start is from the answer, not
generalisation to new photos. Each run trains MobileNetV2 (ImageNet, backbone LR × 0.1) for `--epochs` epochs
with the same seed; baseline: the fresh head. Run: `python benches/reuse_classify.py [--epochs 5]`; results in
benches/results/reuse_classify.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import save_results  # benches/common.py: the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
PHOTOS = {"espresso": "coffee.png", "cat": "chelsea.png", "palace": "china.jpg", "daisy": "flower.jpg",
          "rocket": "rocket.jpg", "moped": "motorcycle_left.png"}
PIPELINE = """
name: reuse_classify
task: classify
data: {{format: folders, root: {root}, train: train, val: val}}
augment:
  train: [{{RandomResizedCrop: {{size: [224, 224], scale: [0.5, 1.0]}}}}, {{HorizontalFlip: {{p: 0.5}}}}]
  eval: [{{SmallestMaxSize: {{max_size: 256}}}}, {{CenterCrop: {{height: 224, width: 224}}}}]
model:
  backbone: {{name: mobilenetv2_100, weights: mobilenet_v2.imagenet, out_indices: [4], feature_nodes: [bn2], freeze: 0}}
  head: {{name: classifier, dropout: 0.2, reuse_classes: {reuse}, class_map: {{cat: Egyptian cat, rocket: missile}}}}
train: {{epochs: {epochs}, batch_size: 8, lr: 0.01, warmup_iters: 5, backbone_lr_mult: 0.1, time_limit: null}}
eval: {{interval: {epochs}}}
output: {{dir: {out}, save_images: false}}
"""


def crops(root: Path, split: str, n: int, seed: int) -> None:
    from cvpipe.data.fetchers import fetch_dataset
    from cvpipe.io.images import read_image, write_image

    photos = fetch_dataset("photos", REPO / "data")
    rng = np.random.default_rng(seed)
    for name, file in PHOTOS.items():
        image = read_image(photos / file)
        h, w = image.shape[:2]
        for k in range(n):
            side = int(min(h, w) * rng.uniform(0.3, 1.0))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            write_image(root / split / name / f"{k:03d}.jpg", image[y:y + side, x:x + side])


def top1_before_training(config) -> float:
    import torch

    from cvpipe.engine.data import load_split
    from cvpipe.engine.evaluate import evaluate
    from cvpipe.models.heads import build_model, reuse_classes

    dataset, _ = load_split(config, "val")
    torch.manual_seed(config.train.seed)
    model = build_model(config, len(dataset.classes))
    reuse_classes(model, config, dataset.classes)
    return evaluate(model.eval(), config, dataset, torch.device("cpu")).stats["top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, nargs="+", default=[1, 5, 20])
    args = parser.parse_args()

    from cvpipe.loading import load_pipeline
    from cvpipe.pipeline import Pipeline

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.per_class:
            root = Path(tmp) / f"n{n}"
            crops(root, "train", n, seed=n)
            crops(root, "val", 10, seed=1000)
            for reuse in ("true", "false"):
                path = Path(tmp) / f"n{n}_{reuse}.yaml"
                path.write_text(PIPELINE.format(root=root, reuse=reuse, epochs=args.epochs, out=Path(tmp) / "runs"))
                before = top1_before_training(load_pipeline(path))
                after = Pipeline.from_yaml(path).fit(tensorboard=False).metrics.stats["top1"]
                results[f"{n}/{reuse}"] = {"per_class": n, "reuse": reuse == "true", "top1_before": before,
                                           "top1_after": after}
    print(f"\n{'images per class':>16} {'start':>14} {'top-1 before':>13} {'after ' + str(args.epochs) + ' epochs':>15}")
    for r in results.values():
        print(f"{r['per_class']:>16} {'reuse_classes' if r['reuse'] else 'fresh head':>14} {r['top1_before']:>13.3f} "
              f"{r['top1_after']:>15.3f}")
    save_results("reuse_classify", {"epochs": args.epochs, "results": list(results.values())})


if __name__ == "__main__":
    main()
