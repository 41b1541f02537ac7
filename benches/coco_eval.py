"""COCO evaluation time: cvpipe's default evaluator (faster-coco-eval) ÷ pycocotools, same synthetic set.

5,000 images, 80 classes and 500,000 detections by default (`synthetic_coco`, shaped like COCO val: 7.3
objects per image, three area ranges, crowd regions, the maxDets cut), bbox, the whole evaluation (loadRes, evaluate, accumulate, summarize) through
`metrics.coco.evaluate_coco`. Each evaluator gets its own deep copies; `--repeats` alternating runs, medians.
Checks that all 12 stats agree to 1e-9. Run: `python benches/coco_eval.py [--images 5000 --detections 500000]`;
results in benches/results/coco_eval.json.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

from common import save_results  # benches/common.py: the script's folder is on sys.path

from cvpipe.data.synthetic import synthetic_coco
from cvpipe.metrics.coco import COCO_STATS, evaluate_coco

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=500_000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gt, results = synthetic_coco(args.images, args.detections, classes=args.classes, seed=0)
    classes = [c["name"] for c in gt["categories"]]
    times: dict[str, list[float]] = {"pycocotools": [], "faster": []}
    stats = {}
    for _ in range(args.repeats):
        for evaluator in times:
            g, r = copy.deepcopy(gt), copy.deepcopy(results)
            start = time.perf_counter()
            metrics = evaluate_coco(g, r, classes, evaluator=evaluator)
            times[evaluator].append(time.perf_counter() - start)
            stats[evaluator] = metrics.stats
    worst = max(abs(stats["faster"][k] - stats["pycocotools"][k]) for k in COCO_STATS)
    base, fast = statistics.median(times["pycocotools"]), statistics.median(times["faster"])
    print(f"{args.images} images, {args.classes} classes, {len(gt['annotations'])} objects, {len(results)} detections; "
          f"{args.repeats} runs each, medians")
    print(f"pycocotools       {base:8.2f} s   1.00")
    print(f"faster-coco-eval  {fast:8.2f} s   {fast / base:.3f} of pycocotools' time ({base / fast:.1f}× faster)")
    print(f"12 stats: largest difference {worst:.1e}; AP {stats['faster']['AP']:.4f}")
    save_results("coco_eval", {"images": args.images, "classes": args.classes, "objects": len(gt["annotations"]),
                               "detections": len(results), "pycocotools_s": base,
                               "faster_s": fast, "ratio": fast / base, "largest_stat_difference": worst,
                               "times": times})


if __name__ == "__main__":
    main()
