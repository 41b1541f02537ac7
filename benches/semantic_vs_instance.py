"""Semantic vs instance segmentation on the held-out right quarter of the nuclei image: FCN (nuclei_fcn) against
Mask R-CNN (nuclei_mask_rcnn), trained on the same left three quarters.

Both are scored on the same 128×512 region (x ≥ 384) against stardist's instance labels:
- nucleus IoU: predicted nucleus pixels vs true ones (FCN: argmax = nucleus; Mask R-CNN: the union of its masks
  scoring ≥ `--conf`);
- nuclei found: true nuclei matched one-to-one by a predicted instance at mask IoU ≥ 0.5 (FCN's instances are the
  8-connected components of its nucleus pixels, the usual way to get objects out of a semantic mask);
- touching pairs separated: of the true nuclei pairs whose masks touch (one dilated by a 3×3 square overlaps the
  other), those where both nuclei are matched, each to its own predicted instance.
It writes the picture (true / FCN / Mask R-CNN instances, each in its own colour, touching pairs' nuclei outlined)
to docs/img/nuclei_semantic_vs_instance.png. The FCN's image is its 128-px tiles' input in one pass (it is fully
convolutional). Run: `python benches/semantic_vs_instance.py [--fcn CKPT] [--mask-rcnn CKPT] [--conf 0.5]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path
from scipy.optimize import linear_sum_assignment

from cvpipe.data.fetchers import NUCLEI_VAL_X, fetch_dataset
from cvpipe.data.formats import read_dataset
from cvpipe.data.samples import image_tensor
from cvpipe.engine.checkpoint import load_trained
from cvpipe.engine.runs import default_weights
from cvpipe.io.images import write_image
from cvpipe.loading import load_pipeline
from cvpipe.ops.inference import detect, segment
from cvpipe.viz.draw import palette

REPO = Path(__file__).resolve().parents[1]
PICTURE = REPO / "docs" / "img" / "nuclei_semantic_vs_instance.png"
CPU = torch.device("cpu")


def iou_matrix(truth: list[np.ndarray], found: list[np.ndarray]) -> np.ndarray:
    iou = np.zeros((len(truth), len(found)))
    for i, t in enumerate(truth):
        for j, f in enumerate(found):
            inter = np.logical_and(t, f).sum()
            iou[i, j] = inter / max(np.logical_or(t, f).sum(), 1)
    return iou


def matches(truth: list[np.ndarray], found: list[np.ndarray], at: float = 0.5) -> dict[int, int]:
    """True nucleus → predicted instance, one-to-one (Hungarian on IoU), pairs below `at` dropped."""
    if not truth or not found:
        return {}
    iou = iou_matrix(truth, found)
    rows, cols = linear_sum_assignment(-iou)
    return {int(r): int(c) for r, c in zip(rows, cols) if iou[r, c] >= at}


def touching_pairs(truth: list[np.ndarray]) -> list[tuple[int, int]]:
    kernel = np.ones((3, 3), np.uint8)
    grown = [cv2.dilate(t.astype(np.uint8), kernel).astype(bool) for t in truth]
    return [(i, j) for i in range(len(truth)) for j in range(i + 1, len(truth)) if np.logical_and(grown[i], truth[j]).any()]


def score(name: str, truth: list[np.ndarray], found: list[np.ndarray], foreground: np.ndarray) -> dict:
    true_fg = np.any(truth, 0)
    matched = matches(truth, found)
    pairs = touching_pairs(truth)
    separated = [p for p in pairs if p[0] in matched and p[1] in matched]  # one-to-one: their instances differ
    return {"method": name, "nucleus_iou": float(np.logical_and(true_fg, foreground).sum() / np.logical_or(true_fg, foreground).sum()),
            "instances": len(found), "nuclei": len(truth), "nuclei_found": len(matched),
            "touching_pairs": len(pairs), "touching_pairs_separated": len(separated)}


def painted(image: np.ndarray, instances: list[np.ndarray], outline: set[int] = frozenset()) -> np.ndarray:
    out = image.copy()
    for k, m in enumerate(instances):
        out[m] = (0.4 * out[m] + 0.6 * np.array(palette(k + 1), np.float32)).astype(np.uint8)
        if k in outline:
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fcn", type=Path, help="nuclei_fcn checkpoint (default: its latest run's)")
    parser.add_argument("--mask-rcnn", type=Path, help="nuclei_mask_rcnn checkpoint (default: its latest run's)")
    parser.add_argument("--conf", type=float, default=0.5, help="Mask R-CNN instances scoring at least this")
    parser.add_argument("--picture-only", action="store_true",
                        help="write the picture, not benches/results (docs/pictures.py: its short runs are not the "
                             "measured ones)")
    args = parser.parse_args()
    fcn_config = load_pipeline(REPO / "pipelines" / "nuclei_fcn.yaml")
    mask_config = load_pipeline(REPO / "pipelines" / "nuclei_mask_rcnn.yaml")
    fcn, _ = load_trained(fcn_config, args.fcn or default_weights(fcn_config), CPU)
    mask_rcnn, _ = load_trained(mask_config, args.mask_rcnn or default_weights(mask_config), CPU)

    val = read_dataset(fetch_dataset("nuclei"), "coco", "val", ["nucleus"])
    (record,) = val.records
    sample = val.sample(0)
    image, truth = sample["image"], [m.astype(bool) for m in sample["masks"]]
    tensor = image_tensor(image)

    semantic = segment(fcn, [tensor], CPU)[0].numpy() == 1
    count, components = cv2.connectedComponents(semantic.astype(np.uint8), connectivity=8)
    fcn_instances = [components == k for k in range(1, count)]

    det = detect(mask_rcnn, [tensor], CPU)[0]
    keep = det["scores"] >= args.conf
    threshold = mask_config.model.head.mask_thresh
    mask_instances = [m.numpy() >= threshold for m in det["masks"][keep][:, 0]]
    union = np.any(mask_instances, 0) if mask_instances else np.zeros_like(semantic)

    rows = [score("fcn (semantic, connected components)", truth, fcn_instances, semantic),
            score("mask_rcnn (instance)", truth, mask_instances, union)]
    print(f"held-out region x ≥ {NUCLEI_VAL_X} of the nuclei image ({record.width}×{record.height}), "
          f"{len(truth)} true nuclei:")
    for r in rows:
        print(f"  {r['method']:38s} nucleus IoU {r['nucleus_iou']:.3f}  instances {r['instances']:3d}  "
              f"nuclei found {r['nuclei_found']}/{r['nuclei']}  touching pairs separated "
              f"{r['touching_pairs_separated']}/{r['touching_pairs']}")
    ratio = rows[1]["touching_pairs_separated"] / max(rows[0]["touching_pairs_separated"], 1)
    print(f"  touching pairs separated, mask_rcnn ÷ fcn = {ratio:.2f}")

    in_pairs = {k for pair in touching_pairs(truth) for k in pair}
    panels = [painted(image, truth, in_pairs), painted(image, fcn_instances), painted(image, mask_instances)]
    picture = np.concatenate([np.pad(p, ((24, 0), (0, 8), (0, 0)), constant_values=32) for p in panels], 1)
    for k, title in enumerate(("truth", "FCN", "Mask R-CNN")):
        cv2.putText(picture, title, (k * (record.width + 8) + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255),
                    1, cv2.LINE_AA)
    write_image(PICTURE, picture)
    if args.picture_only:
        print(f"→ {PICTURE}")
        return
    path = save_results("semantic_vs_instance", {"rows": rows, "ratio_separated": ratio, "conf": args.conf})
    print(f"→ {path}, {PICTURE}")


if __name__ == "__main__":
    main()
