"""INT8 post-training static quantization of an exported graph, calibrated on real images (`cvpipe export
--precision int8 [--calibrate SOURCE]`).

Calibration sees what the graph will see: the images go through the pipeline's own prediction path (decode, the
eval transform, slicing of large images, a fixed-size head's resize) with a stand-in model that keeps each graph
input, so an aerial pipeline calibrates on 400-px slices and an SSD on 300×300 resizes, never on whole images.

The quantizers are the runtimes' own; none is written here:
- ONNX: ONNX Runtime's QDQ quantizer (`quantize_static`, per-channel weights) on every operator it supports.
  Quantizing only the convolutions was measured worse (the COCO SSD found 78 % of its FP32 detections on the
  photos against 100 %): each float island between them costs a quantize / dequantize pair and its rounding.
- OpenVINO: NNCF. Its OpenVINO backend cannot yet walk the `If` that torchvision's batched NMS exports to, so NNCF
  quantizes the ONNX graph (its ONNX backend) and OpenVINO converts the QDQ result, which it runs as INT8.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import DataLoader

from cvpipe.config import PipelineConfig
from cvpipe.engine.onnx_graph import graph_metadata, with_metadata
from cvpipe.errors import ConfigError


class GraphInputs:
    """Stands in for a model inside the prediction path: keeps each input its exported graph would receive (a
    [1, 3, H, W] batch of one image) and answers with the model's own outputs."""

    def __init__(self, model):
        self.model = model
        self.fixed_size = model.fixed_size
        self.region_proposals = None
        self.input_resizer = None
        self.kept: list[np.ndarray] = []

    def eval(self) -> GraphInputs:
        return self

    def __call__(self, images, **kwargs):
        # a list of CHW images (detectors, or batched by the loader) or an NCHW batch → NCHW inputs of one image
        items = [x[None] for x in images] if isinstance(images, list) else list(images.split(1))
        self.kept += [x.detach().cpu().float().contiguous().numpy() for x in items]
        return self.model(images, **kwargs)


def calibration_files(config: PipelineConfig, classes: list[str], source: str | Path | None) -> tuple[list[Path], str]:
    """(image files, where they come from): `source` (a folder, file or glob), else the training split's images."""
    from cvpipe.engine.data import load_split
    from cvpipe.io.images import discover

    if source is not None:
        files, _ = discover(source)
        return files, str(source)
    if not config.data.train or not config.data.root:
        raise ConfigError(f"--precision int8: {config.name} has no training split to calibrate on; name real images "
                          "like the ones it will see with --calibrate FOLDER (or a file or glob)")
    dataset, _ = load_split(config, "train", classes)
    return [record.path for record in dataset.records], f"the training split ({config.data.train})"


def calibration_inputs(model, config: PipelineConfig, classes: list[str], files: list[Path], limit: int,
                       console: Console) -> list[np.ndarray]:
    """Up to `limit` graph inputs from `files` run through the plain prediction path, spread evenly over
    everything those files give (a large image gives many slices). Unreadable files are reported and skipped."""
    from cvpipe.config import loader_workers
    from cvpipe.console import styled
    from cvpipe.data.augment import build_augment
    from cvpipe.engine.predict import ImageFiles
    from cvpipe.tasks import get_task
    from cvpipe.tasks.base import PredictJob

    task = get_task(config.task)
    plain = config.plain()
    recorder = GraphInputs(model)
    transform = build_augment(config.augment, "eval") if task.eval_transform else None
    loader = DataLoader(ImageFiles(files, transform), batch_size=plain.eval.batch_size,
                        num_workers=min(loader_workers(config.train.workers), len(files)), collate_fn=list)
    done: Future = Future()
    done.set_result(None)
    with tempfile.TemporaryDirectory() as tmp:  # the prediction path's own writes (label PNGs) are not wanted
        job = PredictJob(plain, torch.device("cpu"), classes, Path(tmp), 0.0 if task.thresholded else None,
                         save_images=False, submit=lambda *args: done)
        for batch in loader:
            for error in (error for _, _, error in batch if error is not None):
                console.print(styled("skipped", "yellow", f" {error} (not used for calibration)"))
            images = [image for _, image, error in batch if error is None]
            if images:
                task.predict(recorder, images, [files[i].name for i, _, error in batch if error is None], job)
            if len(recorder.kept) >= 4 * limit:  # enough to spread from: the rest of the files are not needed
                break
    kept = recorder.kept
    if not kept:
        raise ConfigError("--precision int8: no readable calibration image; name a folder of the images the model "
                          "will see with --calibrate")
    picked = np.linspace(0, len(kept) - 1, min(limit, len(kept))).round().astype(int)
    return [kept[i] for i in sorted(set(picked.tolist()))]


def quantize_onnxruntime(graph: bytes, samples: list[np.ndarray]) -> bytes:
    """ONNX Runtime's static QDQ quantization: activations uint8, weights int8 per channel, calibrated by min/max
    on `samples` (the graph's single input)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = onnx.load_from_string(graph).graph.input[0].name

    class Samples(CalibrationDataReader):
        def __init__(self):
            self.left = iter(samples)

        def get_next(self):
            x = next(self.left, None)
            return None if x is None else {name: x}

    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared, int8 = Path(tmp, "fp32.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        fp32.write_bytes(graph)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # shapes and constant folding
        quantize_static(str(prepared), str(int8), Samples(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return with_metadata(int8.read_bytes(), graph_metadata(graph))


def quantize_nncf(graph: bytes, samples: list[np.ndarray]) -> bytes:
    """NNCF's post-training quantization of the ONNX graph (its ONNX backend): a QDQ graph OpenVINO runs as INT8."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # NNCF's import asks for CUDA: noise
    import nncf
    import onnx

    nncf.set_log_level(logging.ERROR)

    model = onnx.load_from_string(graph)
    name = model.graph.input[0].name
    quantized = nncf.quantize(model, nncf.Dataset(samples, lambda x: {name: x}), subset_size=len(samples))
    return with_metadata(quantized.SerializeToString(), graph_metadata(graph))
