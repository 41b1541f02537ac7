"""PyTorch ÷ ONNX Runtime on the CPU, images/s, for a detection, a classification and a segmentation pipeline.

Each row runs the same model on the same real images through `detect` / `classify` / `segment`, once with the
PyTorch model (eager, channels-last as the pipelines set it) and once with the graph `cvpipe export` writes
(post-processing included), alternating rounds, medians. A row uses the pipeline's latest trained checkpoint
when there is one (Faster R-CNN after `make demo`), else its freshly initialised model on ImageNet weights:
speed does not depend on what the weights learned, except through the number of boxes NMS sees.
Run: `python benches/export_speed.py [--rounds 5]`; results in benches/results/export_speed.json.
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
from cvpipe.data.samples import image_tensor
from cvpipe.engine.checkpoint import save_checkpoint
from cvpipe.engine.exported import OnnxModel
from cvpipe.engine.onnx_graph import onnx_bytes
from cvpipe.engine.runs import latest_run_dir
from cvpipe.engine.runtime import inference_model
from cvpipe.io.images import list_images, read_image
from cvpipe.models.heads import build_model
from cvpipe.ops.inference import classify, detect, segment
from cvpipe.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
ROWS = [  # pipeline, dataset, folder of images, batch
    ("coco_ssd_mobilenet_v2", "photos", "", 1),
    ("treecrowns_faster_rcnn", "treecrowns", "val", 1),
    ("faces_classify", "faces", "val", 16),
    ("nuclei_fcn", "nuclei-tiles", "val", 4),
]
RUN = {"detect": detect, "classify": classify, "segment": segment}


def weights_for(pipeline: Pipeline, tmp: Path) -> tuple[Path | None, str]:
    config = pipeline.config
    if config.model.weights:
        return None, config.model.weights
    run = latest_run_dir(config)
    if run is not None:
        return pipeline._weights(None), str(pipeline._weights(None))
    classes = config.data.classes or sorted(p.name for p in (config.data.root / config.data.train).iterdir())
    path = tmp / f"{config.name}.pt"
    save_checkpoint(path, {"model": build_model(config, len(classes)).state_dict(), "classes": classes})
    return path, "fresh head on ImageNet weights"


def timed(run, model, tensors: list[torch.Tensor], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(tensors), batch):
        run(model, tensors[i : i + batch], CPU)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=24, help="images per row")
    args = parser.parse_args()
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, dataset, folder, batch in ROWS:
            root = fetch_dataset(dataset, REPO / "data") / folder
            files = list_images(root)[: args.images]
            pipeline = Pipeline.from_yaml(REPO / "pipelines" / f"{name}.yaml", console=Console(quiet=True))
            config = pipeline.config
            weights, source = weights_for(pipeline, Path(tmp))
            model, classes, *_ = inference_model(config, weights, CPU, "pytorch")
            runtime = OnnxModel(onnx_bytes(model, config, classes))
            images = [read_image(f) for f in files]
            if config.task != "detect":
                from cvpipe.data.augment import augment_image, build_augment

                transform = build_augment(config.augment, "eval")
                images = [augment_image(transform, image) for image in images]
            tensors = [image_tensor(image) for image in images]
            run = RUN[config.task]
            timed(run, model, tensors, batch), timed(run, runtime, tensors, batch)  # warm-up
            times = {"pytorch": [], "onnxruntime": []}
            for _ in range(args.rounds):
                times["pytorch"].append(timed(run, model, tensors, batch))
                times["onnxruntime"].append(timed(run, runtime, tensors, batch))
            ips = {k: len(tensors) / statistics.median(v) for k, v in times.items()}
            row = {"pipeline": name, "task": config.task, "weights": source, "images": len(tensors), "batch": batch,
                   "pytorch_img_s": round(ips["pytorch"], 2), "onnxruntime_img_s": round(ips["onnxruntime"], 2),
                   "ratio": round(ips["onnxruntime"] / ips["pytorch"], 3)}
            results.append(row)
            print(f"{name:24} {config.task:9} batch {batch:2d}: pytorch {row['pytorch_img_s']:7.2f} img/s, "
                  f"onnxruntime {row['onnxruntime_img_s']:7.2f} img/s, ratio {row['ratio']:.2f}", flush=True)
    save_results("export_speed", {"threads": torch.get_num_threads(), "rounds": args.rounds, "rows": results})


if __name__ == "__main__":
    main()
