"""Deployment: `cvpipe export --format onnx|openvino --precision fp32|fp16|int8`, every export re-scored on the val
split and refused when it loses accuracy, `cvpipe eval --weights MODEL.onnx|MODEL.xml`, and the COCO SSD through
OpenVINO and INT8 on real photos."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from cvpipe.cli import main
from cvpipe.engine.checkpoint import save_checkpoint
from cvpipe.engine.exported import OpenVinoModel, load_exported
from cvpipe.engine.onnx_graph import onnx_bytes
from cvpipe.engine.runtime import inference_model
from cvpipe.errors import ConfigError
from cvpipe.io.images import read_image
from cvpipe.io.model_files import exported_metadata
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.ops.inference import classify, detect
from cvpipe.ops.threshold import carried
from cvpipe.pipeline import Pipeline

from .conftest import REPO, shapes_pipeline_file
from .test_classify import colours_pipeline
from .test_engine import PIPELINE as FASTER_RCNN

CPU = torch.device("cpu")
pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    """The colours classifier trained for 3 epochs (top-1 1.0 on its val split): (pipeline, best.pt, its YAML)."""
    tmp = tmp_path_factory.mktemp("colours")
    path = colours_pipeline(tmp)
    pipeline = Pipeline.from_yaml(path)
    fit = pipeline.fit(tensorboard=False)
    assert fit.metrics.stats["top1"] == 1.0
    return pipeline, fit.best, path


@pytest.mark.parametrize("fmt, precision, suffix", [("openvino", "fp32", ".xml"), ("openvino", "fp16", ".fp16.xml"),
                                                    ("onnx", "int8", ".int8.onnx"), ("openvino", "int8", ".int8.xml")])
def test_each_export_is_rescored_on_val_and_runs_where_it_was_written(trained_classifier, fmt, precision, suffix):
    pipeline, best, _ = trained_classifier
    report = pipeline.export(weights=best, fmt=fmt, precision=precision)
    assert report.path == best.with_name("best" + suffix) and report.path.is_file() and not report.rejected
    if fmt == "openvino":
        assert report.path.with_suffix(".bin").is_file()
    check = report.rescore  # the checkpoint and the export, the same plain evaluation of the 9 val images
    assert check.stat == "top1" and check.reference == 1.0 and check.exported == 1.0 and check.passed
    if precision == "int8":  # calibrated on the training split's 18 images (fewer than export.calibration_images)
        assert report.calibration == "18 graph inputs from the training split (train)"
    meta = exported_metadata(report.path)
    assert json.loads(meta["cvpipe_classes"]) == ["blue", "green", "red"] and meta["cvpipe_precision"] == precision
    # `cvpipe eval --weights` runs the export through the same evaluation as the checkpoint
    assert pipeline.evaluate(report.path).stats["top1"] == 1.0
    model, classes, backend, _ = inference_model(pipeline.config, report.path, CPU)
    assert backend == {"onnx": "onnxruntime", "openvino": "openvino"}[fmt] and classes == ["blue", "green", "red"]
    images = [torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(k))
              for k in range(4)]
    reference = classify(inference_model(pipeline.config, best, CPU, "pytorch").model, images, CPU)
    tolerance = 1e-4 if precision == "fp32" else 0.05  # probabilities
    torch.testing.assert_close(classify(model, images, CPU), reference, atol=tolerance, rtol=0)


def test_openvino_fp32_computes_in_fp32_and_reads_onnx_too(trained_classifier, tmp_path):
    """OpenVINO computes in bfloat16 by default on CPUs that have it; an FP32 export must give FP32's numbers."""
    pipeline, best, _ = trained_classifier
    model = inference_model(pipeline.config, best, CPU, "pytorch").model
    graph = onnx_bytes(model, pipeline.config, ["blue", "green", "red"])
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x)
    for runner in (OpenVinoModel(graph), inference_model(pipeline.config, best, CPU, "openvino").model):
        torch.testing.assert_close(torch.as_tensor(runner(x)), expected, atol=1e-4, rtol=0)
    (tmp_path / "m.onnx").write_bytes(graph)  # an .onnx runs on OpenVINO when asked
    assert load_exported(tmp_path / "m.onnx", "openvino").runtime == "openvino"
    with pytest.raises(ConfigError, match="runs with --backend openvino"):
        load_exported(tmp_path / "m.xml", "onnxruntime")


def test_ctrl_c_after_openvino_models_interrupts_and_does_not_crash(trained_classifier):
    """Two OpenVINO models released in the order they were made leave the thread a freed signal stack (OpenVINO's
    CPU plugin); the next SIGTERM or Ctrl-C must still interrupt, not crash (engine/signal_stack.py). In a fresh
    process: the crash it guards against would take this one down."""
    _, best, path = trained_classifier
    script = f"""
import os, signal, torch
from cvpipe.cli import terminate_as_interrupt
from cvpipe.engine.exported import OpenVinoModel
from cvpipe.engine.onnx_graph import onnx_bytes
from cvpipe.engine.runtime import inference_model
from cvpipe.loading import load_pipeline
config = load_pipeline({str(path)!r})
model = inference_model(config, {str(best)!r}, torch.device("cpu"), "pytorch").model
graph = onnx_bytes(model, config, ["blue", "green", "red"])
models = [OpenVinoModel(graph), OpenVinoModel(graph)]
for model in models:
    model(torch.rand(2, 3, 32, 32))
del models, model
try:
    with terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100000):
            pass
except KeyboardInterrupt:
    print("interrupted")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "interrupted", (done.returncode, done.stderr[-2000:])


def test_an_export_that_loses_accuracy_is_refused_and_kept_aside(trained_classifier, monkeypatch, capsys):
    """A deliberately broken export (the classifier's last layer zeroed before tracing: one class for every image)
    loses 67 top-1 points: `cvpipe export` exits 1 and renames it; --force keeps it."""
    import cvpipe.engine.export as export

    pipeline, best, pipeline_file = trained_classifier
    real = export.onnx_bytes

    def broken(model, *args, **kwargs):
        model = copy.deepcopy(model)  # the checkpoint it is scored against stays whole
        for module in reversed(list(model.modules())):
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.zeros_(module.weight)
                torch.nn.init.zeros_(module.bias)
                break
        return real(model, *args, **kwargs)

    monkeypatch.setattr(export, "onnx_bytes", broken)
    pipeline_file = str(pipeline_file)
    out = best.with_name("broken.onnx")
    assert main(["export", pipeline_file, "--weights", str(best), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "refused" in printed and "-66.67 points" in printed and "broken.rejected.onnx" in printed
    assert not out.exists() and best.with_name("broken.rejected.onnx").is_file()
    assert main(["export", pipeline_file, "--weights", str(best), "--out", str(out), "--force"]) == 0
    assert out.is_file()
    # the tolerance is a setting: 0.7 accepts the loss
    out.unlink()
    assert main(["export", pipeline_file, "--weights", str(best), "--out", str(out),
                 "--set", "export.tolerance=0.7"]) == 0 and out.is_file()


def test_a_detector_export_scores_as_its_checkpoint(tmp_path):
    """An untrained Faster R-CNN scoring every box: the exported graph's COCO stats on the synthetic val split equal
    the checkpoint's (ONNX Runtime and OpenVINO, FP32)."""
    path = shapes_pipeline_file(tmp_path, FASTER_RCNN, "frcnn.yaml")
    config = load_pipeline(path, ["model.head.score_thresh=0.0"])
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "d.pt", {"model": build_model(config, 2, pretrained=False).state_dict(),
                                        "classes": ["square", "disc"]})
    pipeline = Pipeline.from_yaml(path, ["model.head.score_thresh=0.0"])
    reference = pipeline.evaluate(tmp_path / "d.pt").stats
    assert reference["AP50"] > 0  # something to compare
    for fmt in ("onnx", "openvino"):
        report = pipeline.export(weights=tmp_path / "d.pt", fmt=fmt)
        assert report.rescore.reference == pytest.approx(reference["AP50"])
        stats = pipeline.evaluate(report.path).stats
        for stat in ("AP", "AP50", "AR100"):
            assert stats[stat] == pytest.approx(reference[stat], abs=2e-3), (fmt, stat)


def test_bad_exported_files_get_clear_errors(trained_classifier, tmp_path):
    pipeline, best, _ = trained_classifier
    config = pipeline.config
    (tmp_path / "junk.xml").write_text("<net><layers>")
    with pytest.raises(ConfigError, match="junk.xml: OpenVINO cannot load it"):
        inference_model(config, tmp_path / "junk.xml", CPU)
    report = pipeline.export(tmp_path / "m.xml", weights=best, fmt="openvino")
    report.path.with_suffix(".bin").unlink()  # an IR without its weights
    with pytest.raises(ConfigError, match="m.xml: OpenVINO cannot load it"):
        inference_model(config, report.path, CPU)
    with pytest.raises(ConfigError, match="no such file"):
        inference_model(config, tmp_path / "missing.xml", CPU)
    with pytest.raises(ConfigError, match="--format onnx --precision fp16"):
        pipeline.export(tmp_path / "m.onnx", weights=best, precision="fp16")
    with pytest.raises(ConfigError, match="writes a .xml file"):
        pipeline.export(tmp_path / "m.onnx", weights=best, fmt="openvino")
    (tmp_path / "pool" / "bad.png").parent.mkdir()
    (tmp_path / "pool" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="no readable calibration image"):
        pipeline.export(tmp_path / "q.onnx", weights=best, precision="int8", calibrate=tmp_path / "pool")
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.assets
def test_the_coco_ssd_on_openvino_and_int8_finds_what_pytorch_finds_on_real_photos(tmp_path, photos, monkeypatch):
    """FP32 OpenVINO: the same detections (IoU ≥ 0.99, scores within 1e-3). INT8 (ONNX Runtime's quantizer and
    NNCF, calibrated on the photos): each confident PyTorch detection found again with the same label."""
    monkeypatch.chdir(REPO)
    pipeline = Pipeline.from_yaml("pipelines/coco_ssd_mobilenet_v2.yaml", [f"output.dir={tmp_path}"])
    model = inference_model(pipeline.config, None, CPU, "pytorch").model
    exports = {"openvino fp32": pipeline.export(tmp_path / "ssd.xml", fmt="openvino"),
               "onnx int8": pipeline.export(tmp_path / "ssd.int8.onnx", precision="int8", calibrate=str(photos)),
               "openvino int8": pipeline.export(tmp_path / "ssd.int8.xml", fmt="openvino", precision="int8",
                                                calibrate=str(photos))}
    for report in exports.values():
        assert report.rescore is None and "no val split" in report.unchecked
    assert exports["onnx int8"].megabytes < exports["openvino fp32"].megabytes / 3  # int8 weights
    found = {name: 0 for name in exports}
    confident = 0
    for photo in sorted(photos.glob("*.[jp][pn]g")):
        image = torch.from_numpy(read_image(photo)).permute(2, 0, 1)
        ours = detect(model, [image], CPU)[0]
        keep = ours["scores"] >= 0.5
        confident += int(keep.sum())
        for name, report in exports.items():
            theirs = detect(load_exported(report.path), [image], CPU)[0]
            if name.endswith("fp32"):
                same = theirs["scores"] >= 0.5
                assert same.sum() == keep.sum(), photo.name
                if keep.any():
                    assert (box_iou(ours["boxes"][keep], theirs["boxes"][same]).diag() >= 0.99).all()
                    torch.testing.assert_close(ours["scores"][keep], theirs["scores"][same], atol=1e-3, rtol=0)
            iou = box_iou(ours["boxes"][keep], theirs["boxes"][theirs["scores"] >= 0.3])
            same_label = ours["labels"][keep][:, None] == theirs["labels"][theirs["scores"] >= 0.3][None]
            found[name] += int(((iou >= 0.5) & same_label).any(1).sum()) if len(iou) else 0
    assert confident >= 5
    for name, count in found.items():
        assert count >= confident - 1, (name, count, confident)
    assert carried(exports["openvino int8"].path) == {}  # a ready model carries no threshold
    assert np.isfinite(exports["openvino fp32"].max_abs_difference)


def test_benchmark_measures_each_backend_and_auto_takes_the_fastest_verified(trained_classifier, tmp_path):
    pipeline, best, _ = trained_classifier
    rows, fastest = pipeline.benchmark(out=tmp_path / "bench", weights=best, images=9)
    names = [row.name for row in rows]
    assert names == ["pytorch fp32", "onnxruntime fp32", "onnxruntime int8", "openvino fp32", "openvino fp16",
                     "openvino int8"]
    for row in rows:
        assert not row.error, row
        assert row.score == 1.0 and row.verified and row.images_per_second > 0 and row.ms_p95 >= row.ms_median > 0
        assert (row.file is None) == (row.backend == "pytorch")
    table = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert table["stat"] == "top1" and len(table["rows"]) == 6 and table["files"] == 9
    record = best.with_suffix(".auto.json")
    if fastest is None:  # eager fastest on this machine: nothing remembered, auto keeps its default
        assert not record.exists()
        return
    assert table["fastest_verified"] == fastest.name
    assert fastest.images_per_second == max(row.images_per_second for row in rows)
    chosen = inference_model(pipeline.config, best, CPU, "auto")
    assert chosen.backend == fastest.backend and "cvpipe benchmark" in chosen.why
    # a deleted export: chosen again
    Path(fastest.file).rename(tmp_path / "moved")
    assert "cvpipe benchmark" not in inference_model(pipeline.config, best, CPU, "auto").why


def test_auto_forgets_a_record_of_another_checkpoint(trained_classifier, tmp_path):
    from cvpipe.engine.runtime import backend_record, remember_backend

    pipeline, best, _ = trained_classifier
    copy_of = tmp_path / "other.pt"
    copy_of.write_bytes(best.read_bytes())
    report = pipeline.export(tmp_path / "other.xml", weights=copy_of, fmt="openvino")
    remember_backend(pipeline.config, copy_of, {"backend": "openvino", "precision": "fp32", "file": str(report.path),
                                                "speedup": 2.0, "stat": "top1", "loss": 0.0})
    assert backend_record(pipeline.config, copy_of) == tmp_path / "other.auto.json"
    assert inference_model(pipeline.config, copy_of, CPU, "auto").backend == "openvino"
    os.utime(copy_of, ns=(1, 1))  # rewritten since: another time stamp
    assert "cvpipe benchmark" not in inference_model(pipeline.config, copy_of, CPU, "auto").why
    (tmp_path / "other.auto.json").write_text("{not json")
    assert "cvpipe benchmark" not in inference_model(pipeline.config, copy_of, CPU, "auto").why
