"""Inference-time graph work and backend choice (engine/runtime.py, models/fusion.py): BatchNorm folded into the
convolutions keeps every head's outputs; `--backend auto` takes the backend the head declares for the device
only where its outputs match eager's, says which and why, and caches the ONNX export."""

from __future__ import annotations

import copy

import pytest
import torch

from cvpipe.engine.checkpoint import save_checkpoint
from cvpipe.engine.runtime import fold_batchnorm, inference_model
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.ops.inference import classify, detect, segment

from .conftest import shapes_pipeline_file
from .test_classify import colours_pipeline
from .test_engine import PIPELINE as FASTER_RCNN
from .test_export import _images, _same_detections, detector_pipeline
from .test_fcn import fcn_pipeline
from .test_yolo import tiny_yolo

CPU = torch.device("cpu")


def _model_with_trained_statistics(config, classes: int) -> torch.nn.Module:
    """An untrained model whose BatchNorms have statistics and affine terms far from the identity, so that a
    folding that got any of them wrong shows in the outputs."""
    torch.manual_seed(0)
    model = build_model(config, classes, pretrained=False).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("head", ["faster_rcnn", "ssd", "yolo"])
def test_folding_batchnorm_keeps_each_detectors_detections(tmp_path, head):
    config = load_pipeline(detector_pipeline(tmp_path, head))
    model = _model_with_trained_statistics(config, 2)
    folded = copy.deepcopy(model)
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorm(folded, config) == norms > 0  # every BatchNorm here follows a convolution
    images = _images([(96, 112), (120, 90)])
    _same_detections(detect(folded, images, CPU), detect(model, images, CPU))


def test_folding_keeps_classifier_logits_and_segmenter_labels(tmp_path):
    for path, run in ((colours_pipeline(tmp_path), classify), (fcn_pipeline(tmp_path), segment)):
        config = load_pipeline(path)
        model = _model_with_trained_statistics(config, 3)
        folded = copy.deepcopy(model)
        assert fold_batchnorm(folded, config) > 0
        images = _images([(64, 64), (64, 64)])
        if run is classify:
            assert torch.allclose(classify(folded, images, CPU), classify(model, images, CPU), atol=1e-5)
        else:
            with torch.inference_mode():
                x = torch.stack(images).float() / 255
                assert torch.allclose(folded(x), model(x), atol=1e-4)


def _checkpoint(tmp_path, path):
    config = load_pipeline(path)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "model.pt", {"model": build_model(config, 2, pretrained=False).state_dict(),
                                            "classes": ["square", "disc"]})
    return config, tmp_path / "model.pt"


def test_auto_takes_the_declared_backend_where_it_matches_eager_and_caches_the_export(tmp_path, monkeypatch):
    monkeypatch.setenv("CVPIPE_CACHE", str(tmp_path / "cache"))
    config, weights = _checkpoint(tmp_path, tiny_yolo(tmp_path))
    chosen = inference_model(config, weights, CPU)  # auto, the default
    assert chosen.backend == "onnxruntime" and "same outputs as PyTorch" in chosen.why
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1

    def no_export(*args, **kwargs):
        raise AssertionError("exported again: the cached graph was not used")

    monkeypatch.setattr("cvpipe.engine.onnx_graph.onnx_bytes", no_export)
    again = inference_model(config, weights, CPU)
    images = _images([(96, 112)])
    _same_detections(detect(again.model, images, CPU), detect(chosen.model, images, CPU))

    eager = inference_model(config, weights, CPU, "pytorch")
    assert eager.backend == "pytorch" and eager.why == "--backend"


def test_auto_stays_eager_where_the_backend_differs_or_the_head_declares_none(tmp_path, monkeypatch):
    monkeypatch.setenv("CVPIPE_CACHE", str(tmp_path / "cache"))
    config, weights = _checkpoint(tmp_path, tiny_yolo(tmp_path))
    monkeypatch.setattr("cvpipe.engine.onnx_graph.max_difference", lambda *args: float("inf"))
    fallback = inference_model(config, weights, CPU)
    assert fallback.backend == "pytorch" and "gave other outputs on this model (by inf)" in fallback.why

    def broken_export(*args, **kwargs):
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr("cvpipe.engine.onnx_graph.onnx_bytes", broken_export)
    monkeypatch.setenv("CVPIPE_CACHE", str(tmp_path / "empty_cache"))  # nothing cached: it must export
    failed = inference_model(config, weights, CPU)
    assert failed.backend == "pytorch" and "onnxruntime failed on this model (RuntimeError" in failed.why
    frcnn, frcnn_weights = _checkpoint(tmp_path / "f", shapes_pipeline_file(tmp_path, FASTER_RCNN, "frcnn.yaml"))
    chosen = inference_model(frcnn, frcnn_weights, CPU)
    assert chosen.backend == "pytorch" and "fastest for faster_rcnn on cpu" in chosen.why


def test_batch_sizes_follow_the_device_and_task_unless_set(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    unset = ["eval.batch_size=null"]  # the test pipelines set one
    detector = load_pipeline(tiny_yolo(tmp_path), unset)
    assert (detector.eval.batch_size, detector.tiling.batch) == (1, 1)  # batching detectors is slower on a CPU
    assert load_pipeline(colours_pipeline(tmp_path), unset).eval.batch_size == 4
    assert load_pipeline(tiny_yolo(tmp_path), ["eval.batch_size=3", "tiling.batch=5"]).tiling.batch == 5
    assert load_pipeline(tiny_yolo(tmp_path), ["eval.batch_size=3"]).eval.batch_size == 3
    assert load_pipeline(tiny_yolo(tmp_path), [*unset, "train.device=cuda"]).eval.batch_size == 16
