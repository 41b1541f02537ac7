"""`cvpipe export --format onnx` and `--backend onnxruntime`: every exportable head gives PyTorch's outputs through
ONNX Runtime, post-processing included, on inputs other than the one the graph was traced with; the COCO SSD
on real photos; predict and video read an exported file; what cannot be exported says so."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from cvpipe.engine.checkpoint import save_checkpoint
from cvpipe.engine.exported import OnnxModel, OpenVinoModel
from cvpipe.engine.onnx_graph import onnx_bytes
from cvpipe.engine.runtime import compile_core, inference_model
from cvpipe.errors import ConfigError
from cvpipe.io.images import read_image, write_image
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.ops.inference import classify, detect, segment
from cvpipe.ops.threshold import carried
from cvpipe.pipeline import Pipeline

from .conftest import REPO, shapes_pipeline_file
from .test_classify import colours_pipeline
from .test_engine import PIPELINE as FASTER_RCNN
from .test_fcn import fcn_pipeline
from .test_ssd import _tiny_ssd
from .test_yolo import tiny_yolo

CPU = torch.device("cpu")


def _images(sizes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 255, (3, *size), dtype=torch.uint8, generator=generator) for size in sizes]


def _same_detections(ours: list[dict], theirs: list[dict], top: int = 20, within: float = 1e-2) -> None:
    """Same count; each of our `top` best detections is among theirs (same label, score within `within` / 100,
    box within `within` px). Matched as sets: an untrained head's near-equal scores may sort differently."""
    def rows(d: dict) -> torch.Tensor:  # a score 1e-4 apart or another label is as far as a box 0.01 px apart
        return torch.cat([d["boxes"], d["scores"][:, None] * 100, d["labels"][:, None].float() * 1e3], 1)

    for a, b in zip(ours, theirs):
        assert len(a["scores"]) == len(b["scores"])
        distance = torch.cdist(rows(a)[:top], rows(b), p=float("inf"))
        assert (distance.min(1).values < within).all(), distance.min(1).values


def one_stage(head: str) -> str:
    """The shapes pipeline with a one-stage FPN head (retinanet, fcos) in place of Faster R-CNN's, scoring every box."""
    settings = {"retinanet": "anchor_sizes: [[16, 24], [32, 48]], ", "fcos": ""}[head]
    start = FASTER_RCNN.index("  head: {{name: faster_rcnn")
    end = FASTER_RCNN.index("\ntrain: {{") + 1
    return (FASTER_RCNN[:start] + f"  head: {{{{name: {head}, {settings}min_size: 96, max_size: 128, score_thresh: 0.0, "
            "detections_per_img: 50}}\n"
            + FASTER_RCNN[end:])


def detector_pipeline(tmp_path, head: str):
    """A small shapes pipeline with this detection head, scoring every box (score_thresh 0 where it has one)."""
    return {"faster_rcnn": lambda: shapes_pipeline_file(tmp_path, FASTER_RCNN, "frcnn.yaml"),
            "retinanet": lambda: shapes_pipeline_file(tmp_path, one_stage("retinanet"), "retinanet.yaml"),
            "fcos": lambda: shapes_pipeline_file(tmp_path, one_stage("fcos"), "fcos.yaml"),
            "ssd": lambda: _tiny_ssd(tmp_path, "score_thresh: 0.0"),
            "yolo": lambda: tiny_yolo(tmp_path, "score_thresh: 0.0")}[head]()


def opencv_outputs(graph: bytes, x: np.ndarray) -> list[np.ndarray]:
    """The graph's outputs as OpenCV's DNN module computes them (its default engine) for the NCHW input `x`. A net
    read for each input: OpenCV 5.0 keeps a detector's data-dependent shapes from its first forward."""
    import onnx

    net = cv2.dnn.readNetFromONNX(np.frombuffer(graph, np.uint8))
    net.setInput(x, onnx.load_from_string(graph).graph.input[0].name)
    return list(net.forward(net.getUnconnectedOutLayersNames()))


def as_detections(outputs: list[np.ndarray]) -> dict:
    return {"boxes": torch.from_numpy(outputs[0]), "scores": torch.from_numpy(outputs[1]),
            "labels": torch.from_numpy(outputs[2].astype(np.int64))}


# OpenCV 5.0's DNN module stops with a floating-point exception on RetinaNet's and FCOS's graphs
OPENCV_RUNS = ("faster_rcnn", "ssd", "yolo")


@pytest.mark.parametrize("head", ["faster_rcnn", "retinanet", "fcos", "ssd", "yolo"])
def test_detectors_export_with_their_post_processing(tmp_path, head):
    config = load_pipeline(detector_pipeline(tmp_path, head))
    torch.manual_seed(0)
    model = build_model(config, 2, pretrained=False).eval()
    graph = onnx_bytes(model, config, ["square", "disc"], {"cvpipe_conf": 0.3125, "cvpipe_conf_tta": 0.5})
    runtime = OnnxModel(graph)
    assert runtime.classes == ["square", "disc"] and runtime.task == "detect"
    assert runtime.session.get_inputs()[0].shape[:2] == [1, 3]  # a batch axis, as every runtime expects
    (tmp_path / "model.onnx").write_bytes(graph)  # the checkpoint's best-F1 threshold rides in the metadata
    assert carried(tmp_path / "model.onnx") == {False: 0.3125, True: 0.5}
    for image in _images([(90, 120), (128, 96), (64, 64)]):  # sizes and contents unlike the traced example
        # one at a time: in a PyTorch batch Faster R-CNN pads every image to the largest, which moves its proposals
        _same_detections(detect(model, [image], CPU), detect(runtime, [image], CPU))
    if head in OPENCV_RUNS:  # OpenCV's DNN module reads the same file and finds the same boxes
        x = torch.rand(1, 3, *(model.fixed_size or (96, 96)), generator=torch.Generator().manual_seed(2)).numpy()
        _same_detections([as_detections(runtime.run_graph(x))], [as_detections(opencv_outputs(graph, x))], top=10,
                         within=0.05)  # OpenCV's convolutions round differently from ONNX Runtime's


def test_refined_boxes_export_for_any_number_of_detections(tmp_path):
    """Faster R-CNN's second box pass (`refine_boxes`) traced with one number of detections runs with others,
    none included: nothing in its graph is a constant of the traced image."""
    config = load_pipeline(shapes_pipeline_file(tmp_path, FASTER_RCNN.replace("max_size: 128,", "max_size: 128, "
                                                                              "refine_boxes: true,"), "r.yaml"))
    torch.manual_seed(0)
    model = build_model(config, 2, pretrained=False).eval()
    images = _images([(96, 96), (90, 120), (96, 96), (128, 96)], seed=3)
    scores = detect(model, images[:1], CPU)[0]["scores"]
    model.model.roi_heads.score_thresh = float(scores[len(scores) // 2])  # the first image keeps half its boxes
    runtime = OnnxModel(onnx_bytes(model, config, ["square", "disc"]))
    counts = set()
    for image in images:
        ours = detect(model, [image], CPU)
        _same_detections(ours, detect(runtime, [image], CPU))
        counts.add(len(ours[0]["scores"]))
    assert len(counts) >= 3, counts
    model.model.roi_heads.score_thresh = 1.0  # no box at all
    assert detect(OnnxModel(onnx_bytes(model, config, ["square", "disc"])), images[:1], CPU)[0]["scores"].shape == (0,)


def test_classifier_and_fcn_export_with_a_free_batch_and_size(tmp_path):
    for path, classes, run in ((colours_pipeline(tmp_path), ["blue", "green", "red"], classify),
                               (fcn_pipeline(tmp_path), ["background", "square", "disc"], segment)):
        config = load_pipeline(path)
        torch.manual_seed(0)
        model = build_model(config, len(classes), pretrained=False).eval()
        graph = onnx_bytes(model, config, classes)
        runtime = OnnxModel(graph)
        x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2)).numpy()
        np.testing.assert_allclose(opencv_outputs(graph, x)[0], runtime.run_graph(x)[0], atol=1e-4)  # OpenCV DNN
        for images in (_images([(64, 64)] * 3), _images([(96, 64)])):
            ours, theirs = run(model, images, CPU), run(runtime, images, CPU)
            if run is classify:
                torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
            else:
                agree = np.mean([(a == b).float().mean().item() for a, b in zip(ours, theirs)])
                assert agree > 0.999, agree


def test_what_cannot_be_exported_says_so(tmp_path):
    from .test_rcnn import FAST_RCNN, pipeline_file

    config = load_pipeline(pipeline_file(tmp_path, FAST_RCNN))
    model = build_model(config, 2, pretrained=False)
    with pytest.raises(ConfigError, match="selective search"):
        onnx_bytes(model, config, ["square", "disc"])
    frcnn = build_model(load_pipeline(shapes_pipeline_file(tmp_path, FASTER_RCNN, "frcnn.yaml")), 2, pretrained=False)
    with pytest.raises(ConfigError, match="fixed-size heads"):
        compile_core(frcnn, "faster_rcnn")


def exported_classifier(tmp_path) -> tuple[Pipeline, Path]:
    """The colours classifier pipeline (untrained) exported to tmp/c.onnx from a checkpoint tmp/c.pt."""
    path = colours_pipeline(tmp_path)
    config = load_pipeline(path)
    save_checkpoint(tmp_path / "c.pt", {"model": build_model(config, 3, pretrained=False).state_dict(),
                                        "classes": ["blue", "green", "red"]})
    pipeline = Pipeline.from_yaml(path)
    report = pipeline.export(tmp_path / "c.onnx", weights=tmp_path / "c.pt")
    assert report.path.is_file() and report.max_abs_difference < 1e-4
    return pipeline, report.path


def test_an_exported_file_is_checked_against_the_pipeline(tmp_path):
    pipeline, _ = exported_classifier(tmp_path)
    config = pipeline.config
    with pytest.raises(ConfigError, match="--backend onnxruntime"):
        inference_model(config, tmp_path / "c.onnx", CPU, "pytorch")
    other = load_pipeline(fcn_pipeline(tmp_path))
    with pytest.raises(ConfigError, match="task 'classify'"):
        inference_model(other, tmp_path / "c.onnx", CPU, "onnxruntime")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ConfigError, match="junk.onnx"):
        inference_model(config, tmp_path / "junk.onnx", CPU, "onnxruntime")


@pytest.mark.assets
def test_the_coco_ssd_through_onnx_runtime_matches_pytorch_on_real_photos(tmp_path, photos, monkeypatch):
    monkeypatch.chdir(REPO)
    pipeline = Pipeline.from_yaml("pipelines/coco_ssd_mobilenet_v2.yaml", [f"output.dir={tmp_path}"])
    report = pipeline.export(tmp_path / "ssd.onnx")
    assert report.max_abs_difference < 1e-3
    model = inference_model(pipeline.config, None, CPU, "pytorch").model
    runtime, classes, *_ = inference_model(pipeline.config, tmp_path / "ssd.onnx", CPU, "onnxruntime")
    assert len(classes) == 80
    graph = (tmp_path / "ssd.onnx").read_bytes()
    openvino = OpenVinoModel(tmp_path / "ssd.onnx")
    matched = 0
    for photo in sorted(photos.glob("*.[jp][pn]g")):
        rgb = read_image(photo)
        # the same file in OpenVINO and OpenCV's DNN module gives ONNX Runtime's outputs
        x = (cv2.resize(rgb, (300, 300), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)[None] / 255).astype(np.float32)
        reference = runtime.run_graph(x)
        for other in (openvino.run_graph(x), opencv_outputs(graph, x)):
            assert [len(a) for a in other] == [len(a) for a in reference], photo.name
            for a, b in zip(other, reference):
                np.testing.assert_allclose(a, b, atol=2e-3, err_msg=photo.name)
        image = torch.from_numpy(rgb).permute(2, 0, 1)
        ours, theirs = detect(model, [image], CPU)[0], detect(runtime, [image], CPU)[0]
        keep_ours, keep_theirs = ours["scores"] >= 0.3, theirs["scores"] >= 0.3
        assert keep_ours.sum() == keep_theirs.sum(), photo.name
        if keep_ours.any():
            iou = box_iou(ours["boxes"][keep_ours], theirs["boxes"][keep_theirs])
            assert (iou.diag() >= 0.99).all(), (photo.name, iou.diag())
            torch.testing.assert_close(ours["scores"][keep_ours], theirs["scores"][keep_theirs], atol=1e-3, rtol=0)
            assert ours["labels"][keep_ours].tolist() == theirs["labels"][keep_theirs].tolist()
            matched += int(keep_ours.sum())
    assert matched >= 5
    # predict reads the exported file and writes what the PyTorch model writes
    pipeline.predict(photos, tmp_path / "onnx", weights=tmp_path / "ssd.onnx", backend="onnxruntime", save_images=False)
    pipeline.predict(photos, tmp_path / "torch", save_images=False)
    a = json.loads((tmp_path / "onnx" / "results.json").read_text())
    b = json.loads((tmp_path / "torch" / "results.json").read_text())
    assert [(r["image_id"], r["category_id"]) for r in a] == [(r["image_id"], r["category_id"]) for r in b]


def test_video_runs_an_exported_model(tmp_path):
    pipeline, _ = exported_classifier(tmp_path)
    for i in range(3):
        write_image(tmp_path / "frames" / f"{i}.png", np.full((40, 40, 3), 80 * i, np.uint8))
    report = pipeline.video(str(tmp_path / "frames"), tmp_path / "v.mp4", weights=tmp_path / "c.onnx",
                            backend="onnxruntime")
    assert report.frames == 3
    lines = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert all(set(line["labels"]) == {"blue", "green", "red"} for line in lines)
