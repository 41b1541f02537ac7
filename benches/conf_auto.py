"""`predict --conf auto` (the best-F1 threshold best.pt carries) against the fixed `--conf 0.25`: precision,
recall and F1 of each run's written results.json against the val labels, at IoU 0.5 (COCO matching,
metrics/detection_analysis.py).

Both runs go through the pipeline exactly as a user's would (`Pipeline.predict`, with its tiling and test-time
augmentation), so the figures are those of the files a user gets. Baseline: the `--conf 0.25` run.
Run: `python benches/conf_auto.py [PIPELINE] [--weights best.pt] [--set key=value ...]`; results in
benches/results/conf_auto.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from common import save_results  # benches/common.py: the script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]


def scored(out: Path, gt: dict, classes: list[str]) -> dict[str, float]:
    """Pooled precision / recall / F1 at IoU 0.5 of a predict run's results.json against `gt`."""
    from cvpipe.metrics.detection_analysis import analyse, prf

    ids = {image["file_name"]: image["id"] for image in gt["images"]}
    written = json.loads((out / "images.json").read_text())
    to_gt = {image["id"]: ids[image["file_name"]] for image in written["images"]}
    results = [{**r, "image_id": to_gt[r["image_id"]]} for r in json.loads((out / "results.json").read_text())]
    analysis = analyse(gt, results, classes, max_dets=max(len(results), 100), conf=0.0)
    tp = sum(row["tp"] for row in analysis.at_conf.values())
    kept = sum(row["detections"] for row in analysis.at_conf.values())
    objects = sum(row["objects"] for row in analysis.at_conf.values())
    figures = {k: float(v[0]) for k, v in prf(np.array([tp]), np.array([kept]), objects).items()}
    return {**figures, "tp": tp, "detections": kept, "objects": objects, "conf": written["conf"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", nargs="?", default=str(REPO / "pipelines" / "treecrowns_faster_rcnn.yaml"))
    parser.add_argument("--weights", type=Path, default=None, help="default: the pipeline's latest best.pt")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides")
    args = parser.parse_args()

    from cvpipe.data.formats.coco import to_coco
    from cvpipe.engine.data import load_split
    from cvpipe.pipeline import Pipeline

    pipeline = Pipeline.from_yaml(Path(args.pipeline), args.overrides)
    dataset, _ = load_split(pipeline.config, "val", pipeline.config.data.classes or None)
    gt = to_coco(dataset)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, conf in (("--conf 0.25", 0.25), ("--conf auto", "auto")):
            out = Path(tmp) / name.replace(" ", "_")
            pipeline.predict(dataset.root / dataset.split if (dataset.root / dataset.split).is_dir() else dataset.root,
                             out, weights=args.weights, conf=conf, save_images=False)
            runs[name] = scored(out, gt, dataset.classes)
    base = runs["--conf 0.25"]
    print(f"\n{'run':<12} {'conf':>8} {'precision':>10} {'recall':>8} {'F1':>7} {'TP':>5} {'boxes':>6} {'objects':>8}"
          f" {'F1 ÷ 0.25':>10}")
    for name, r in runs.items():
        print(f"{name:<12} {r['conf']['value']:>8.4f} {r['precision']:>10.3f} {r['recall']:>8.3f} {r['f1']:>7.3f} "
              f"{r['tp']:>5} {r['detections']:>6} {r['objects']:>8} {r['f1'] / base['f1']:>10.3f}")
    print(f"auto's threshold: {runs['--conf auto']['conf']['source']}")
    save_results("conf_auto", {"pipeline": args.pipeline, "runs": runs})


if __name__ == "__main__":
    main()
