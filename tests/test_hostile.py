"""Hostile but fair input, command by command: every case exits 2 (or, for `data check`, 1 with its report) with a
message naming the file or field, never with a traceback, and never loses or duplicates a result.

The classes are issue 16's: (1) one bad file in a folder run, (2) a journal cut at any byte, (3) output folders
that cannot be written, (4) malformed COCO/VOC/YOLO geometry, (5) what `validate` must catch, (6) checkpoints for
other classes, (7) messages that hide the problem, (8) writes where they should not go, (9) out-of-range options.
"""

from __future__ import annotations

import errno
import json
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from cvpipe.cli import main
from cvpipe.data.synthetic import make_shapes
from cvpipe.engine.journal import Finished, JournalIndex, open_journal
from cvpipe.engine.predict import PredictReport, write_outputs
from cvpipe.io.images import JsonArray, atomic_open, write_image
from cvpipe.metrics.coco import detections_to_results
from cvpipe.tasks import get_task

from .conftest import shapes_pipeline_file

PIPELINE = """
name: shapes
task: detect
data: {{format: coco, root: {root}, train: train, val: val, classes: [square, disc]}}
model:
  backbone: {{name: mobilenetv2_050, out_indices: [3, 4]}}
  neck: {{name: fpn, out_channels: 32}}
  head: {{name: faster_rcnn, anchor_sizes: [[16, 24], [32, 48]], min_size: 96, max_size: 128, roi_batch_size: 32,
          rpn_pre_nms_top_n: 100, rpn_post_nms_top_n: 50}}
train: {{epochs: 1, batch_size: 2, lr: 0.01, warmup_iters: 2, workers: 0}}
eval: {{batch_size: 2}}
output: {{dir: {out}}}
"""


def cli(capsys, *args) -> tuple[int, str]:
    """Run the command in this process: an exception it lets escape fails the test, as a traceback would."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return code, text


def png_header(width: int, height: int) -> bytes:
    """A valid PNG whose header claims `width` × `height`: OpenCV refuses it by its pixel limit before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


BAD_FILES = {  # name → bytes: each must be reported by name and skipped
    "huge.png": png_header(40000, 40000),
    "empty.jpg": b"",
    "truncated.jpg": b"\xff\xd8\xff\xe0 cut off",
    "scan [draft].png": b"not an image at all",  # brackets: rich markup must not eat them
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A detector trained for one epoch on synthetic shapes: (pipeline file, its best.pt, the val images)."""
    tmp = tmp_path_factory.mktemp("hostile")
    path = shapes_pipeline_file(tmp, PIPELINE, "shapes.yaml")
    assert main(["train", str(path), "--no-tensorboard"]) == 0
    return path, tmp / "runs" / "shapes" / "best.pt", tmp / "src" / "val"


@pytest.fixture
def mixed_folder(tmp_path, trained):
    """Four good images and every kind of bad file, some in a sub-folder."""
    folder = tmp_path / "mixed"
    shutil.copytree(trained[2], folder)
    (folder / "nested").mkdir()
    for k, (name, data) in enumerate(BAD_FILES.items()):
        (folder / ("nested" if k % 2 else "") / name).write_bytes(data)
    return folder


# ----------------------------------------------------------------------------- 1. one file never stops a folder run


def test_predict_reports_every_bad_file_and_finishes_the_rest(capsys, trained, mixed_folder, tmp_path):
    pipeline, _, _ = trained
    out = tmp_path / "pred"
    code, text = cli(capsys, "predict", pipeline, "--source", mixed_folder, "--out", out, "--conf", "0")
    assert code == 0
    skipped = dict(line.split(": ", 1) for line in (out / "skipped.txt").read_text().splitlines())
    assert sorted(Path(name).name for name in skipped) == sorted(BAD_FILES)
    assert "decoder's limit" in skipped["huge.png"] and "CV_IO_MAX_IMAGE_PIXELS" in skipped["huge.png"]
    assert "scan [draft].png" in text  # printed as it is
    names = [image["file_name"] for image in json.loads((out / "images.json").read_text())["images"]]
    assert names == [f"shape_{i:03d}.png" for i in range(4)]


def test_video_over_a_folder_reports_every_bad_file(capsys, trained, mixed_folder, tmp_path):
    pipeline, _, _ = trained
    out = tmp_path / "video" / "mixed.mp4"
    code, text = cli(capsys, "video", pipeline, "--source", mixed_folder, "--out", out)
    assert code == 0
    summary = json.loads(out.with_name("mixed.summary.json").read_text())
    assert sorted(Path(name).name for name, _ in summary["bad_files"]) == sorted(BAD_FILES)
    assert summary["frames"] == 4 and "scan [draft].png" in text


def test_train_and_eval_skip_a_bad_image_and_list_it(capsys, tmp_path):
    path = shapes_pipeline_file(tmp_path, PIPELINE, "shapes.yaml")
    (tmp_path / "shapes" / "train" / "shape_002.png").write_bytes(png_header(40000, 40000))
    (tmp_path / "shapes" / "val" / "shape_001.png").write_bytes(b"")
    code, text = cli(capsys, "train", path, "--no-tensorboard")
    assert code == 0 and "shape_002.png" in text and "val/shape_001.png: not a decodable image" in text
    assert "(left out of the metrics)" in text
    listed = (tmp_path / "runs" / "shapes" / "skipped.txt").read_text()
    assert "shape_002.png" in listed and "decoder's limit" in listed and "val/shape_001.png" in listed
    code, text = cli(capsys, "eval", path)
    assert code == 0 and "shape_001.png: not a decodable image" in text and "left out of the metrics" in text


def test_data_check_reports_a_bad_image_and_goes_on(capsys, tmp_path):
    from cvpipe.data.formats import write_dataset

    write_dataset(make_shapes(tmp_path / "src", "train", n=3), tmp_path / "voc", "voc", "train")
    (tmp_path / "voc" / "train" / "shape_001.png").write_bytes(png_header(40000, 40000))
    code, text = cli(capsys, "data", "check", tmp_path / "voc", "--format", "voc", "--classes", "square", "disc")
    assert code == 1 and "unreadable image: 1" in text and "shape_001.png" in text and "decoder's limit" in text


# ----------------------------------------------------------------------------- 2. the journal, cut at any byte


def test_a_journal_cut_at_every_byte_of_its_last_line_loses_and_duplicates_nothing(tmp_path):
    entries = [{"file": f"img_{i}.jpg", "boxes": [[1.5, 2, 30, 40]], "scores": [0.9], "labels": [i]} for i in range(3)]
    whole = "".join(json.dumps(e) + "\n" for e in entries).encode()
    last_start = whole.rindex(b"\n", 0, len(whole) - 1) + 1
    for cut in range(last_start, len(whole) + 1):  # every byte of the last line, its newline included
        path = tmp_path / f"journal_{cut}.jsonl"
        path.write_bytes(whole[:cut])
        done = JournalIndex([path])
        with open_journal(path, resume=True) as journal:  # what --resume does: redo what is not done
            for entry in entries:
                if entry["file"] not in done:
                    journal.write(json.dumps(entry) + "\n")
        names = [e["file"] for e in entries]
        assert list(JournalIndex([path]).entries(names)) == list(zip(names, entries)), f"cut at byte {cut}"
        assert path.read_bytes().count(b"\n") == 3  # one line each: nothing redone twice


def test_the_journal_index_keeps_each_images_last_entry_across_shards(tmp_path):
    first, second = tmp_path / ".journal.shard0of2.jsonl", tmp_path / ".journal.shard1of2.jsonl"
    first.write_text('{"file": "a.jpg", "skipped": "corrupt"}\n{"file": "b.jpg", "labels": [0]}\n'
                     '{"file": "a.jpg", "labels": [1]}\n{"file": "c.jpg", "skipped": "too large"}\n')
    second.write_text('{"file": "b.jpg", "labels": [2]}\nnot json\n{"file": "d.jpg", "labels": [3]}\n[1, 2]\n')
    index = JournalIndex([first, second, tmp_path / "missing.jsonl"])
    assert len(index) == 4 and "a.jpg" in index and "e.jpg" not in index
    assert index.skipped == {"c.jpg": "too large"}  # a.jpg was redone after it was skipped
    order = ["d.jpg", "e.jpg", "c.jpg", "b.jpg", "a.jpg"]
    assert list(index.entries(order)) == [("d.jpg", {"file": "d.jpg", "labels": [3]}), ("e.jpg", None),
                                          ("c.jpg", {"file": "c.jpg", "skipped": "too large"}),
                                          ("b.jpg", {"file": "b.jpg", "labels": [2]}),
                                          ("a.jpg", {"file": "a.jpg", "labels": [1]})]
    finished = Finished(index, order)
    assert [(k, name) for k, name, _ in finished] == [(1, "d.jpg"), (4, "b.jpg"), (5, "a.jpg")]
    assert list(finished) == list(finished)  # a task may read it twice


def test_result_files_are_written_from_the_journal_one_entry_at_a_time(tmp_path):
    """The merge at the end of a run holds an index, not the entries: its peak allocations are a small part of
    what the parsed journal takes, and the files are those the held entries give."""
    rng = np.random.default_rng(0)
    names = [f"part{i // 500}/{i:05d}.jpg" for i in range(4000)]
    entries = {name: {"file": name, "width": 640, "height": 480, "boxes": rng.uniform(0, 400, (5, 4)).round(2).tolist(),
                      "scores": rng.uniform(0, 1, 5).round(5).tolist(), "labels": rng.integers(0, 3, 5).tolist()}
               for name in names}
    entries[names[7]] = {"file": names[7], "skipped": "corrupt JPEG"}
    (tmp_path / ".journal.jsonl").write_text("".join(json.dumps(entries[n]) + "\n" for n in reversed(names)))
    classes, task = ["a", "b", "c"], get_task("detect")
    tracemalloc.start()
    held = [json.loads(line) for line in (tmp_path / ".journal.jsonl").read_text().splitlines()]
    held_bytes = tracemalloc.get_traced_memory()[0]
    del held
    tracemalloc.stop()
    tracemalloc.start()
    report = PredictReport(tmp_path, 0, 0, conf=0.5, conf_source="test")
    written = write_outputs(tmp_path, JournalIndex([tmp_path / ".journal.jsonl"]), names, classes, report, task)
    streamed_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert written == ["results.json (COCO results)", "images.json", "detections.csv", "skipped.txt"]
    assert streamed_peak < 0.25 * held_bytes, (streamed_peak, held_bytes)
    kept = [(k, n, entries[n]) for k, n in enumerate(names, start=1) if k != 8]
    assert (tmp_path / "results.json").read_text() == json.dumps(
        detections_to_results([e for _, _, e in kept], [k for k, _, _ in kept]))
    images = json.loads((tmp_path / "images.json").read_text())
    assert [i["id"] for i in images["images"]] == [k for k, _, _ in kept] and images["conf"]["value"] == 0.5
    assert (tmp_path / "skipped.txt").read_text() == f"{names[7]}: corrupt JPEG\n"
    assert not list(tmp_path.glob(".*.part"))


def test_a_streamed_file_is_atomic_and_byte_for_byte_json(tmp_path):
    with atomic_open(tmp_path / "empty.json") as f, JsonArray(f):
        pass
    assert (tmp_path / "empty.json").read_text() == "[]"
    path = tmp_path / "results.json"
    items = [{"a": 1.5, "b": [1, 2]}, "x", None]
    with atomic_open(path) as f, JsonArray(f) as array:
        array.extend(items)
    assert path.read_text() == json.dumps(items)
    with pytest.raises(OSError) as failed, atomic_open(path) as f:  # the disk fills mid-way: the old file stays
        f.write("[")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert failed.value.filename == str(path)  # the error names the file, for describe_os_error
    assert path.read_text() == json.dumps(items) and not list(tmp_path.glob(".*.part"))


def test_predict_resume_after_a_cut_journal_rebuilds_every_result(capsys, trained, tmp_path):
    pipeline, _, source = trained
    out = tmp_path / "pred"
    assert cli(capsys, "predict", pipeline, "--source", source, "--out", out, "--conf", "0")[0] == 0
    first = json.loads((out / "images.json").read_text())
    journal = out / ".journal.jsonl"
    data = journal.read_bytes()
    journal.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 20])  # a kill mid-way through the last line
    code, text = cli(capsys, "predict", pipeline, "--source", source, "--out", out, "--conf", "0", "--resume")
    assert code == 0 and "3 done earlier" in text
    assert json.loads((out / "images.json").read_text()) == first
    assert len(JournalIndex([journal])) == 4 and journal.read_bytes().count(b"\n") == 4


# ----------------------------------------------------------------------------- 3. output folders


def never_load(monkeypatch):
    """Make loading a model fail the test: output problems must be found before it."""
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    for module in ("cvpipe.engine.predict", "cvpipe.engine.video"):
        monkeypatch.setattr(f"{module}.inference_model", fail)
    monkeypatch.setattr("cvpipe.engine.checkpoint.load_trained", fail)


def output_commands(pipeline: Path, source: Path, target: Path) -> dict[str, list]:
    return {
        "predict": ["predict", pipeline, "--source", source, "--out", target],
        "video": ["video", pipeline, "--source", source, "--out", target / "v.mp4"],
        "export": ["export", pipeline, "--out", target / "m.onnx"],
        "eval": ["eval", pipeline, "--json", target / "metrics.json"],
        "train": ["train", pipeline, "--set", f"output.dir={target}"],
        "augment": ["augment", "preview", pipeline, "--out", target / "p.png"],
    }


@pytest.mark.parametrize("command", ["predict", "video", "export", "eval", "train", "augment"])
def test_an_output_that_is_a_file_is_one_message_before_the_model_loads(capsys, monkeypatch, trained, tmp_path,
                                                                        command):
    pipeline, _, source = trained
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the output folder should be")
    never_load(monkeypatch)
    code, text = cli(capsys, *output_commands(pipeline, source, blocker)[command])
    assert code == 2 and str(blocker) in text and ("is a file" in text or "a file is in the way" in text)
    assert blocker.read_text().startswith("a file")  # untouched


@pytest.mark.parametrize("command", ["predict", "video", "train"])
def test_a_read_only_or_full_output_is_named_with_its_cause(capsys, monkeypatch, trained, tmp_path, command):
    pipeline, _, source = trained
    never_load(monkeypatch)
    target = tmp_path / "out"

    def refuse(*args, **kwargs):  # what a read-only folder answers (root would not be refused by chmod)
        raise PermissionError(errno.EACCES, "Permission denied", str(target))

    with monkeypatch.context() as patch:
        patch.setattr("cvpipe.io.outputs.tempfile.TemporaryFile", refuse)
        code, text = cli(capsys, *output_commands(pipeline, source, target)[command])
    assert code == 2 and str(target) in text and "permission denied" in text

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr("cvpipe.io.outputs.shutil.disk_usage", lambda path: usage._replace(free=5 << 20))
    code, text = cli(capsys, *output_commands(pipeline, source, target)[command])
    assert code == 2 and str(target) in text and "disk full (5 MB free" in text


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full for a real ENOSPC")
def test_a_disk_that_fills_mid_run_is_one_message_and_resume_finishes(capsys, trained, tmp_path):
    pipeline, _, source = trained
    out = tmp_path / "pred"
    out.mkdir()
    (out / ".results.json.part").symlink_to("/dev/full")  # writing the results hits a real "No space left"
    code, text = cli(capsys, "predict", pipeline, "--source", source, "--out", out, "--no-images")
    assert code == 2 and "results.json: disk full" in text and "free some space" in text
    assert not (out / "results.json").exists()
    (out / ".results.json.part").unlink(missing_ok=True)
    code, text = cli(capsys, "predict", pipeline, "--source", source, "--out", out, "--no-images", "--resume")
    assert code == 0 and "4 done earlier" in text
    assert len(json.loads((out / "images.json").read_text())["images"]) == 4


# ----------------------------------------------------------------------------- 4. malformed geometry


def coco_with_bad_geometry(tmp_path: Path) -> Path:
    from cvpipe.data.formats import write_dataset

    root = tmp_path / "coco"
    write_dataset(make_shapes(tmp_path / "src", "train", n=3), root, "coco", "train")
    path = root / "train" / "annotations.json"
    data = json.loads(path.read_text())
    good = data["annotations"][0]
    bad = {
        101: {"segmentation": [[1, 2, 3, 4]]},  # two points
        102: {"segmentation": [[1, 2, 3, 4, 5, 6, 7]]},  # odd count
        103: {"bbox": [1, 2, 3]},
        104: {"bbox": ["1", "2", "3", "4"]},
        105: {"segmentation": {"counts": "abc"}},  # RLE without size
        106: {"bbox": None},
    }
    for ann_id, change in bad.items():
        data["annotations"].append({**good, "id": ann_id, **change})
    data["annotations"].append("not an annotation")
    path.write_text(json.dumps(data))
    return root


def test_data_check_reports_malformed_coco_geometry_and_fix_drops_it(capsys, tmp_path):
    root = coco_with_bad_geometry(tmp_path)
    code, text = cli(capsys, "data", "check", root, "--format", "coco", "--split", "train", "--examples", "10")
    assert code == 1 and "malformed annotation: 7" in text
    for ann_id, words in ((101, "4 coordinates"), (102, "7 coordinates"), (103, "'bbox' must be 4 numbers"),
                          (104, "'bbox' must be 4 numbers"), (105, "'size' must be [height, width]"), (106, "'bbox'")):
        line = next(line for line in text.splitlines() if f"annotation {ann_id}:" in line)
        assert words in line
    assert "annotations[" in text  # the entry that is not a mapping
    fixed = tmp_path / "fixed"
    assert cli(capsys, "data", "check", root, "--format", "coco", "--split", "train", "--fix", fixed)[0] == 1
    assert cli(capsys, "data", "check", fixed, "--format", "coco", "--split", "train")[0] == 0


def test_convert_and_train_skip_malformed_geometry_with_a_warning(capsys, tmp_path):
    root = coco_with_bad_geometry(tmp_path)
    code, text = cli(capsys, "data", "convert", root, "--from", "coco", "--to", "yolo", "--out", tmp_path / "yolo",
                     "--split", "train")
    assert code == 0 and "7 malformed annotation(s) left out" in text
    (root / "val").symlink_to(root / "train")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(PIPELINE.format(root=root, out=tmp_path / "runs"))
    code, text = cli(capsys, "train", pipeline, "--no-tensorboard")
    assert code == 0 and "malformed annotation: 7" in text


def test_voc_and_yolo_say_what_is_wrong_with_a_box_line(capsys, tmp_path):
    from cvpipe.data.formats import write_dataset

    shapes = make_shapes(tmp_path / "src", "train", n=2)
    write_dataset(shapes, tmp_path / "voc", "voc", "train")
    xml = tmp_path / "voc" / "train" / "shape_000.xml"
    xml.write_text(xml.read_text().replace("<xmin>", "<xmin>12px", 1).replace("<width>", "<width>wide", 1))
    code, text = cli(capsys, "data", "check", tmp_path / "voc", "--format", "voc", "--classes", "square", "disc")
    assert code == 1 and "NaN box" not in text and "must be numbers, got '12px" in text

    write_dataset(shapes, tmp_path / "yolo", "yolo", "train")
    label = tmp_path / "yolo" / "labels" / "train" / "shape_000.txt"
    label.write_text("0 0.5 0.5 0.2 0.2 0.9\n1 a b c d\n0 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n")
    code, text = cli(capsys, "data", "check", tmp_path / "yolo", "--format", "yolo", "--examples", "5")
    assert "NaN box" not in text and "6 columns: expected 5" in text and "then numbers expected" in text
    from cvpipe.data.formats import read_dataset

    polygon = read_dataset(tmp_path / "yolo", "yolo", "train").records[0].boxes
    width, height = shapes.records[0].width, shapes.records[0].height
    np.testing.assert_allclose(polygon[-1], [0.1 * width, 0.1 * height, 0.3 * width, 0.3 * height], rtol=1e-5)


# ----------------------------------------------------------------------------- 5. validate catches it first


@pytest.mark.parametrize("edit, overrides, words", [
    (None, ["model.backbone.name=resnet5O"], ['unknown timm model "resnet5O"', "resnet50"]),
    ("augment:\n  train: [{HorizontalFlip: {probability: 0.5}}]\n", [],
     ["augment.train[0]", "unknown parameter(s) 'probability'"]),
    ("name: again\n", [], ["given twice", "name: given again (first at line 2)"]),
    ("", [], ["the file is empty"]),
    (None, ["name=../../escape"], ["names the run folder under output.dir"]),
    (None, ["model.head.score_thresh=.nan"], ["model.head.score_thresh"]),
    (None, ["train.lr=.inf"], ["train.lr"]),
])
def test_validate_refuses_what_would_fail_later(capsys, trained, tmp_path, edit, overrides, words):
    pipeline, _, _ = trained
    broken = tmp_path / "broken.yaml"
    broken.write_text("# nothing here\n" if edit == "" else pipeline.read_text() + (edit or ""))
    code, message = cli(capsys, "validate", broken, *(["--set", *overrides] if overrides else []))
    assert code == 2 and str(broken) in message
    for w in words:
        assert w in message


def test_a_run_name_cannot_leave_output_dir(capsys, trained, tmp_path):
    pipeline, _, _ = trained
    code, text = cli(capsys, "train", pipeline, "--set", "name=../outside", f"output.dir={tmp_path / 'runs'}")
    assert code == 2 and "name" in text and not (tmp_path / "outside").exists()


# ----------------------------------------------------------------------------- 6. a checkpoint for other classes


@pytest.mark.parametrize("command", ["predict", "video", "export", "eval"])
def test_every_command_refuses_a_checkpoint_trained_for_other_classes(capsys, trained, tmp_path, command):
    pipeline, best, source = trained
    args = {"predict": ["--source", source, "--out", tmp_path / "p"], "video": ["--source", source, "--out",
            tmp_path / "v.mp4"], "export": ["--out", tmp_path / "m.onnx"], "eval": []}[command]
    code, text = cli(capsys, command, pipeline, "--weights", best, *args, "--set", "data.classes=[square, disc, star]")
    assert code == 2 and f"{best}: checkpoint was trained for 2 classes" in text


# ----------------------------------------------------------------------------- 7. messages that say the problem


def test_corrupt_and_malicious_checkpoints_say_so_in_full(capsys, trained, tmp_path):
    import os

    pipeline, best, source = trained

    class Payload:
        def __reduce__(self):
            return os.system, ("echo owned > " + str(tmp_path / "owned"),)

    torch.save({"model": Payload(), "classes": ["a"]}, tmp_path / "evil.pt")
    (tmp_path / "cut.pt").write_bytes(best.read_bytes()[:1000])
    for name, cause in (("evil.pt", "posix.system, which could run code"), ("cut.pt", "zip archive")):
        code, text = cli(capsys, "predict", pipeline, "--weights", tmp_path / name, "--source", source)
        assert code == 2 and "corrupt or not a cvpipe checkpoint" in text and cause in text
        assert text.rstrip().endswith("re-run the training that made it")  # whole, not cut mid-sentence
    assert not (tmp_path / "owned").exists()
    code, text = cli(capsys, "weights", "import", tmp_path / "evil.pt", "--arch", "timm.resnet18", "--name", "x.y")
    assert code == 2 and "could run code" in text
    (tmp_path / "notes.pth").write_text("not weights")
    code, text = cli(capsys, "weights", "import", tmp_path / "notes.pth", "--arch", "timm.resnet18", "--name", "x.y")
    assert code == 2 and "notes.pth: corrupt or not torch weights (not a PyTorch file)" in text


def test_resume_names_the_file_it_was_given(capsys, trained, tmp_path):
    pipeline, best, _ = trained
    code, text = cli(capsys, "train", pipeline, "--resume", best)
    assert code == 2 and f"--resume {best}: this checkpoint has no optimizer state" in text
    other = tmp_path / "copy_of_last.pt"
    shutil.copy(best.with_name("last.pt"), other)
    code, text = cli(capsys, "train", pipeline, "--resume", other, "--no-tensorboard")
    assert code == 0 and f"resuming from {other}" in text


def test_nan_coordinates_and_bracketed_names_print_as_they_are(capsys, tmp_path):
    from cvpipe.data.formats import write_dataset

    shapes = make_shapes(tmp_path / "src", "train", n=2)
    shapes.records[0].boxes[0] = [np.nan, 1, 5, 5]
    write_dataset(shapes, tmp_path / "coco [v2]", "coco", "train")
    code, text = cli(capsys, "data", "check", tmp_path / "coco [v2]", "--format", "coco", "--split", "train")
    assert code == 1 and "coco [v2]" in text and "coordinates [nan, 1.0, nan, 5.0]" in text


# ----------------------------------------------------------------------------- 8. writes where they should not go


def test_data_check_fix_never_writes_over_or_inside_a_dataset(capsys, tmp_path):
    from cvpipe.data.formats import write_dataset

    write_dataset(make_shapes(tmp_path / "src", "train", n=2), tmp_path / "voc", "voc", "train")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    for target, words in ((existing, "exists and is not empty"), (tmp_path / "voc" / "train", "inside or over"),
                          (tmp_path / "voc", "inside or over")):
        code, text = cli(capsys, "data", "check", tmp_path / "voc", "--format", "voc", "--fix", target)
        assert code == 2 and words in text
    assert (existing / "keep.txt").read_text() == "mine" and list(existing.iterdir()) == [existing / "keep.txt"]
    assert sorted(p.name for p in (tmp_path / "voc" / "train").iterdir()) == \
        ["shape_000.png", "shape_000.xml", "shape_001.png", "shape_001.xml"]
    code, text = cli(capsys, "data", "convert", tmp_path / "voc", "--from", "voc", "--to", "coco", "--out", existing,
                     "--split", "train")
    assert code == 2 and "exists and is not empty" in text


def test_predict_with_out_inside_source_never_reads_its_own_output(capsys, trained, tmp_path):
    pipeline, _, source = trained
    folder = tmp_path / "photos"
    shutil.copytree(source, folder)
    for _ in range(2):
        code, text = cli(capsys, "predict", pipeline, "--source", folder, "--out", folder / "predictions")
        assert code == 0 and "predict: 4 images" in text
    names = [i["file_name"] for i in json.loads((folder / "predictions" / "images.json").read_text())["images"]]
    assert names == [f"shape_{i:03d}.png" for i in range(4)]


# ----------------------------------------------------------------------------- 9. out-of-range options


@pytest.mark.parametrize("args", [
    ["predict", "--conf", "2"], ["predict", "--conf", "nan"], ["predict", "--conf", "-0.1"],
    ["video", "--conf", "inf"], ["video", "--stride", "0"], ["video", "--max-frames", "-3"],
    ["video", "--fps", "0"],
])
def test_out_of_range_options_exit_2_before_any_work(capsys, trained, tmp_path, args):
    pipeline, _, source = trained
    code, text = cli(capsys, args[0], pipeline, "--source", source, *args[1:])
    assert code == 2 and args[1] in text and "expected" in text


def test_the_real_entry_point_prints_no_traceback(trained, tmp_path):
    """The same rules through the installed `cvpipe` command, as a user meets them."""
    pipeline, _, source = trained
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for args in (["predict", pipeline, "--source", source, "--out", blocker],
                 ["validate", tmp_path / "missing.yaml"]):
        done = subprocess.run([sys.executable, "-m", "cvpipe.cli", *map(str, args)], capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr and str(args[-1]) in done.stderr


def test_write_image_leaves_no_partial_file_when_the_disk_is_full(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    (tmp_path / ".a.png.part").symlink_to("/dev/full")
    with pytest.raises(OSError) as err:
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert err.value.errno == errno.ENOSPC
    assert not (tmp_path / "a.png").exists() and not (tmp_path / ".a.png.part").exists()
