"""What the masks cost at inference: Mask R-CNN images/s ÷ Faster R-CNN images/s on the same images.

The Faster R-CNN is the trained Mask R-CNN without its mask branch: the same backbone, FPN, RPN and box head
weights, so both find the same boxes and the difference is RoIAlign 14×14, the mask FCN and pasting the masks into
the image. Batch 1, eager PyTorch, CPU; the two models alternate for `--repeats` passes over the images (the train
tiles and the held-out quarter of `nuclei`) and the medians are compared.
Run: `python benches/mask_rcnn_speed.py [--weights runs/nuclei_mask_rcnn/best.pt] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import save_results  # benches/common.py: the script's folder is on sys.path

from cvpipe.data.fetchers import fetch_dataset
from cvpipe.data.samples import image_tensor
from cvpipe.engine.checkpoint import load_trained
from cvpipe.engine.runs import default_weights
from cvpipe.io.images import discover, read_image
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.models.heads.faster_rcnn import FasterRCNNHead
from cvpipe.ops.inference import detect

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "nuclei_mask_rcnn.yaml"


def without_masks(mask_model: torch.nn.Module, config) -> torch.nn.Module:
    """A Faster R-CNN holding the Mask R-CNN's weights except the mask branch's, in the same memory layout."""
    box_config = config.model_copy(deep=True)
    fields = {k: v for k, v in config.model.head.model_dump().items() if k in FasterRCNNHead.model_fields}
    box_config.model.head = FasterRCNNHead(**{**fields, "name": "faster_rcnn"})
    model = build_model(box_config, mask_model.num_classes, pretrained=False)
    state = {k: v for k, v in mask_model.state_dict().items() if ".mask_" not in k}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    if config.train.channels_last:  # as load_trained prepares the Mask R-CNN for inference
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def seconds_per_pass(model, tensors: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    for t in tensors:
        detect(model, [t], torch.device("cpu"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="a nuclei_mask_rcnn checkpoint (default: the latest run's)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = load_pipeline(PIPELINE)
    weights = args.weights or default_weights(config)  # a clear error where nuclei_mask_rcnn was never trained
    root = fetch_dataset("nuclei")
    files, _ = discover(root)
    tensors = [image_tensor(read_image(f)) for f in files]
    mask_model, _ = load_trained(config, weights, torch.device("cpu"))
    box_model = without_masks(mask_model, config)
    found = [(len(detect(mask_model, [t], torch.device("cpu"))[0]["boxes"]),
              len(detect(box_model, [t], torch.device("cpu"))[0]["boxes"])) for t in tensors]  # also the warm-up
    assert all(a == b for a, b in found), found
    times: dict[str, list[float]] = {"mask_rcnn": [], "faster_rcnn": []}
    for _ in range(args.repeats):
        times["mask_rcnn"].append(seconds_per_pass(mask_model, tensors))
        times["faster_rcnn"].append(seconds_per_pass(box_model, tensors))
    speed = {name: len(tensors) / statistics.median(s) for name, s in times.items()}
    ratio = speed["mask_rcnn"] / speed["faster_rcnn"]
    print(f"{len(tensors)} images ({sum(a for a, _ in found)} instances), {args.repeats} alternating passes, medians:")
    print(f"  mask_rcnn    {speed['mask_rcnn']:.2f} img/s")
    print(f"  faster_rcnn  {speed['faster_rcnn']:.2f} img/s (same weights, no mask branch)")
    print(f"  mask_rcnn ÷ faster_rcnn = {ratio:.2f}")
    path = save_results("mask_rcnn_speed", {"images": len(tensors), "instances": sum(a for a, _ in found),
                                            "images_per_second": speed, "ratio": ratio, "seconds": times,
                                            "weights": str(weights)})
    print(f"→ {path}")


if __name__ == "__main__":
    main()
