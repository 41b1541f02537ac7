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
from cvpipe.ops.detections import Detections
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
        with open_journal(path, resume=True, made_by={}) as journal:  # what --resume does: redo what is not done
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
        [r for k, _, e in kept for r in Detections.from_journal(e).coco_results(k)])
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
    assert len(JournalIndex([journal])) == 4 and journal.read_bytes().count(b"\n") == 5  # what made it, then 4


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


# ============================================================================= the second round: the newer surfaces
# (numbers, geometry, injection, paths, YAML, resume, memory, video names, signals, the live page, caches)


def _get(port: int, path: str, host: str | None = None, address: str = "127.0.0.1") -> tuple[int, bytes]:
    """One GET to the live page with the Host header given (default: its own address), answered in full."""
    import http.client
    from urllib.parse import quote

    conn = http.client.HTTPConnection(address, port, timeout=10)
    conn.putrequest("GET", quote(path), skip_host=True)  # as a browser sends it: percent-encoded
    conn.putheader("Host", host if host is not None else f"{address}:{port}")
    conn.endheaders()
    response = conn.getresponse()
    body = response.read(2048) if response.status != 200 or not path.endswith(".mjpg") else b""
    conn.close()
    return response.status, body


@pytest.fixture
def live_view():
    from cvpipe.io.live_view import LiveView

    view = LiveView("127.0.0.1:0", ["<b>a</b>", "b"])
    view.publish(0, np.zeros((32, 48, 3), np.uint8), {"fps": 1.0})
    yield view, int(view.url.rsplit(":", 1)[1].strip("/"))
    view.close()


# ----------------------------------------------------------------------------- numbers from users and URLs


@pytest.mark.parametrize("args, words", [
    (["video", "{p}", "--source", "²"], "webcam index"),
    (["video", "{p}", "--source", "٣"], "webcam index"),
    (["video", "{p}", "--source", "9" * 4000], "webcam index"),
    (["video", "{p}", "--source", "2147483648"], "webcam index"),
    (["video", "{p}", "--source", "{src}", "--serve", "²"], "--serve"),
    (["video", "{p}", "--source", "{src}", "--serve", "1" * 5000], "--serve"),
    (["video", "{p}", "--source", "{src}", "--serve", "::1:8000"], "brackets"),
    (["video", "{p}", "--source", "{src}", "--serve", "127.0.0.1:65536"], "--serve"),
    (["predict", "{p}", "--source", "{src}", "--actors", "٣", "--engine", "ray"], "--actors"),
    (["predict", "{p}", "--source", "{src}", "--address", "127.0.0.1:²", "--engine", "ray"], "--address"),
    (["predict", "{p}", "--source", "{src}", "--shard", "٠/٢"], "--shard"),
    (["predict", "{p}", "--source", "{src}", "--conf", "٠.٥"], "--conf"),
    (["inspect", "lenet5", "--input", "1x" + "3" * 5000 + "x32"], "--input"),
])
def test_numbers_are_ascii_digits_within_bounds(capsys, trained, tmp_path, args, words):
    pipeline, _, val = trained
    code, text = cli(capsys, *(a.format(p=pipeline, src=val) for a in args))
    assert code == 2 and words in text, text


def test_the_live_page_refuses_odd_stream_numbers(live_view):
    view, port = live_view
    for path in ("/stream/².mjpg", "/stream/٣.jpg", "/frame/" + "9" * 5000 + ".jpg", "/frame/2.jpg", "/frame/-1.jpg"):
        assert _get(port, path)[0] == 404, path
    assert _get(port, "/frame/0.jpg")[0] == 200


# ----------------------------------------------------------------------------- degenerate geometry


def test_a_counting_line_of_one_point_is_refused_where_it_is_declared(capsys, trained, tmp_path):
    from cvpipe.config import VideoConfig
    from cvpipe.errors import ConfigError
    from cvpipe.ops.counting import Counting

    pipeline, _, _ = trained
    code, text = cli(capsys, "validate", pipeline, "--set", "video.lines.gate=[[10, 10], [10, 10]]", "video.track=true")
    assert code == 2 and "video.lines" in text and "same point" in text
    # fractions a pixel apart on a small frame round onto one pixel: refused when the frame size is known
    counting = Counting(VideoConfig(track=True, lines={"gate": [(0.5, 0.5), (0.501, 0.5)]},
                                    zones={"flat": [(0.1, 0.1), (0.2, 0.2), (0.3, 0.3)]}), ["a"])
    with pytest.raises(ConfigError, match="same pixel"):
        counting._settle(100, 100)
    counting = Counting(VideoConfig(track=True, zones={"flat": [(0.1, 0.1), (0.2, 0.2), (0.3, 0.3)]}), ["a"])
    with pytest.raises(ConfigError, match="encloses no area"):
        counting._settle(100, 100)


def test_thin_images_are_skipped_by_name_and_the_rest_predicted(capsys, trained, tmp_path):
    pipeline, _, val = trained
    folder = tmp_path / "thin"
    shutil.copytree(val, folder)
    write_image(folder / "strip_1x300.png", np.full((1, 300, 3), 128, np.uint8))
    write_image(folder / "strip_5000x2.png", np.full((5000, 2, 3), 128, np.uint8))
    out = tmp_path / "pred"
    code, text = cli(capsys, "predict", pipeline, "--source", folder, "--out", out, "--conf", "0")
    assert code == 0
    skipped = (out / "skipped.txt").read_text()
    assert "strip_1x300.png: a 300×1 image" in skipped and "strip_5000x2.png: a 2×5000 image" in skipped
    assert len(json.loads((out / "images.json").read_text())["images"]) == 4


def _geotiff(path: Path, image: np.ndarray, scale, tiepoint) -> None:
    import tifffile

    tags = [(33550, "d", len(scale), tuple(scale), False)] if scale is not None else []
    tags += [(33922, "d", len(tiepoint), tuple(tiepoint), False)]
    tifffile.imwrite(path, image, photometric="rgb", extratags=tags)


def test_a_broken_georeference_is_skipped_by_name_and_the_geojson_stays_json(capsys, trained, tmp_path):
    from cvpipe.io.images import read_image

    pipeline, _, val = trained
    image = read_image(sorted(val.glob("*.png"))[0])
    folder = tmp_path / "geo"
    folder.mkdir()
    _geotiff(folder / "good.tif", image, (0.5, 0.5, 0.0), (0, 0, 0, 500000.0, 4000000.0, 0))
    _geotiff(folder / "one_scale.tif", image, (0.5,), (0, 0, 0, 500000.0, 4000000.0, 0))
    _geotiff(folder / "nan_scale.tif", image, (float("nan"), 0.5, 0.0), (0, 0, 0, 500000.0, 4000000.0, 0))
    _geotiff(folder / "short_tiepoint.tif", image, (0.5, 0.5, 0.0), (0, 0, 0))
    _geotiff(folder / "zero_scale.tif", image, (0.0, 0.5, 0.0), (0, 0, 0, 500000.0, 4000000.0, 0))
    out = tmp_path / "pred"
    code, text = cli(capsys, "predict", pipeline, "--source", folder, "--out", out, "--conf", "0")
    assert code == 0
    skipped = dict(line.split(": ", 1) for line in (out / "skipped.txt").read_text().splitlines())
    assert set(skipped) == {"one_scale.tif", "nan_scale.tif", "short_tiepoint.tif", "zero_scale.tif"}
    assert "ModelPixelScaleTag" in skipped["nan_scale.tif"] and "ModelTiepointTag" in skipped["short_tiepoint.tif"]

    def no_constant(name):
        raise AssertionError(f"{name} in detections.geojson")

    collection = json.loads((out / "detections.geojson").read_text(), parse_constant=no_constant)
    assert {f["properties"]["file"] for f in collection["features"]} == {"good.tif"}


def test_instance_masks_of_another_size_than_their_image_are_left_out_by_name(capsys, tmp_path):
    src = tmp_path / "masks"
    for k, (h, w) in enumerate([(40, 50), (40, 50)]):
        write_image(src / "train" / "images" / f"img{k}.png", np.full((h, w, 3), 90, np.uint8))
        instances = np.zeros((h, w) if k == 0 else (h + 3, w), np.uint8)
        instances[5:20, 5:25] = 1
        write_image(src / "train" / "instances" / f"img{k}.png", instances)
    code, text = cli(capsys, "data", "convert", src, "--from", "instance_masks", "--to", "coco", "--out",
                     tmp_path / "coco", "--split", "train")
    assert code == 0 and "img1.png" in text and "50×43" in text and "40" in text
    data = json.loads((tmp_path / "coco" / "train" / "annotations.json").read_text())
    assert [image["file_name"] for image in data["images"]] == ["img0.png"]


def test_rle_counts_that_do_not_decode_to_the_image_are_reported(capsys, tmp_path):
    from pycocotools import mask as mask_utils

    from cvpipe.data.formats import write_dataset

    root = tmp_path / "coco"
    write_dataset(make_shapes(tmp_path / "src", "train", n=2), root, "coco", "train")
    path = root / "train" / "annotations.json"
    data = json.loads(path.read_text())
    image = data["images"][0]
    h, w = image["height"], image["width"]
    good = mask_utils.encode(np.asfortranarray(np.ones((h, w), np.uint8)))
    ann = {**data["annotations"][0], "image_id": image["id"]}
    cases = {201: {"size": [h, w], "counts": good["counts"].decode()},  # fine
             202: {"size": [h, w], "counts": "zzzz"},  # runs that add up to another size
             203: {"size": [h, w], "counts": "\x01\x02"},  # outside the alphabet
             204: {"size": [h + 1, w], "counts": good["counts"].decode()},  # not the image's size
             205: {"size": [h, w], "counts": [h * w + 5]}}  # past the mask: pycocotools would write beyond it
    for ann_id, rle in cases.items():
        data["annotations"].append({**ann, "id": ann_id, "segmentation": rle})
    path.write_text(json.dumps(data))
    code, text = cli(capsys, "data", "check", root, "--format", "coco", "--split", "train", "--examples", "10")
    assert code == 1 and "malformed annotation: 4" in text
    for ann_id, words in ((202, "do not decode"), (203, "do not decode"), (204, "not the image's"), (205, "add up")):
        assert words in next(line for line in text.splitlines() if f"annotation {ann_id}:" in line)


# ----------------------------------------------------------------------------- injection into what cvpipe writes


def test_csv_cells_that_start_a_formula_are_neutralised():
    import csv
    import io

    from cvpipe.io.tables import csv_writer

    buffer = io.StringIO()
    writer = csv_writer(buffer)
    writer.writerow(["=HYPERLINK(\"http://x\")", "+1", "-cmd", "@SUM(A1)", "\tx", "plain, with comma", -0.5, 3])
    assert next(csv.reader(io.StringIO(buffer.getvalue()))) == [
        "'=HYPERLINK(\"http://x\")", "'+1", "'-cmd", "'@SUM(A1)", "'\tx", "plain, with comma", "-0.5", "3"]


def test_file_names_cannot_inject_formulas_or_forge_skipped_lines(capsys, trained, tmp_path):
    import csv

    pipeline, _, val = trained
    folder = tmp_path / "names"
    folder.mkdir()
    good = sorted(val.glob("*.png"))
    for name, source in zip(["=1+2.png", "@cmd.png", "+x.png", "-y.png"], good):
        shutil.copy(source, folder / name)
    (folder / "evil\nforged.png: fake reason.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    code, _ = cli(capsys, "predict", pipeline, "--source", folder, "--out", out, "--conf", "0")
    assert code == 0
    rows = list(csv.reader((out / "detections.csv").open(newline="")))
    assert {row[0] for row in rows[1:]} == {"'=1+2.png", "'@cmd.png", "'+x.png", "'-y.png"}
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith("evil\\nforged.png: fake reason.png: ")


COLOUR_CLASSES = {"red, dark": (200, 30, 30), "=green": (30, 200, 30), "[link=javascript:alert(1)]blue": (30, 30, 200),
                  "@yellow": (200, 200, 30)}


def test_class_names_with_commas_formulas_and_markup_stay_data(capsys, tmp_path):
    import csv

    from .test_classify import PIPELINE as CLASSIFY

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name, rgb in COLOUR_CLASSES.items():
            for i in range(3):
                image = np.clip(np.array(rgb) + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                write_image(tmp_path / "colours" / split / name / f"{i}.png", image)
    pipeline = tmp_path / "colours.yaml"
    pipeline.write_text(CLASSIFY.format(root=tmp_path / "colours", out=tmp_path / "runs", eval="")
                        .replace("epochs: 3", "epochs: 1"))
    assert cli(capsys, "train", pipeline, "--no-tensorboard")[0] == 0
    code, _ = cli(capsys, "eval", pipeline, "--json", tmp_path / "eval" / "metrics.json", "--report")
    assert code == 0
    rows = list(csv.reader((tmp_path / "eval" / "val_predictions.csv").open(newline="")))
    assert all(len(row) == 4 for row in rows) and len(rows) == 13
    shown = {"'" + name if name[0] in "=@" else name for name in COLOUR_CLASSES}
    assert {row[1] for row in rows[1:]} == shown
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "javascript:" not in page.replace("[link=javascript:alert(1)]blue", "")
    assert "[link=javascript:alert(1)]blue" in page and 'href="javascript' not in page


def test_report_tables_show_markup_in_data_as_text():
    from rich.table import Table

    from cvpipe.viz.report import _tables_html

    table = Table("class", "AP")
    for name in ("[/x]", "[link=javascript:alert(1)]a[/link]", "<script>alert(1)</script>", "[bold]b"):
        table.add_row(name, "0.5")
    page = _tables_html([table])
    assert "[/x]" in page and "[link=javascript:alert(1)]a[/link]" in page and "[bold]b" in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "href" not in page


def test_the_live_page_answers_only_its_own_host(live_view):
    view, port = live_view
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1", f"LOCALHOST:{port}"):
        assert _get(port, "/stats.json", host)[0] == 200, host
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", ""):
        status, body = _get(port, "/stats.json", host)
        assert status == 421 and b"fps" not in body, host
    assert _get(port, "/", "attacker.test")[0] == 421
    status, body = _get(port, "/")
    assert status == 200 and b"&lt;b&gt;a&lt;/b&gt;" in body or b"<b>a</b>" not in body


def test_the_page_says_ended_once_every_source_has(live_view):
    view, port = live_view
    view.publish(0, np.zeros((32, 48, 3), np.uint8), {"fps": 1.0, "health": {"state": "playing", "read": 3}})
    view.ended()
    streams = json.loads(_get(port, "/stats.json")[1])["streams"]
    assert streams[0]["health"] == {"state": "ended", "read": 3} and streams[1] == {}


def test_host_rules_for_wildcard_and_named_addresses():
    from cvpipe.io.live_view import allowed_hosts, host_allowed

    wildcard = allowed_hosts("0.0.0.0", 8000)
    assert host_allowed("192.168.1.20:8000", wildcard, True) and host_allowed("[fe80::1]:8000", wildcard, True)
    assert host_allowed("localhost:8000", wildcard, True)
    assert not host_allowed("rebind.attacker.test:8000", wildcard, True)
    named = allowed_hosts("camera-box.local", 8000)
    assert host_allowed("camera-box.local:8000", named, False) and not host_allowed("127.0.0.2:8000", named, False)


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "..", ".hidden", "x" * 300, "ok\nname"])
def test_weights_import_names_are_plain_names(capsys, tmp_path, monkeypatch, name):
    monkeypatch.setenv("CVPIPE_WEIGHTS", str(tmp_path / "weights"))
    (tmp_path / "model.pth").write_bytes(b"x")
    code, text = cli(capsys, "weights", "import", tmp_path / "model.pth", "--arch", "timm.resnet10t", "--name", name)
    assert code == 2 and "plain name" in text
    assert not any(p.is_file() for p in tmp_path.rglob("*") if p.name != "model.pth")


@pytest.mark.parametrize("command", ["check", "convert"])
def test_a_split_cannot_lead_a_dataset_copy_out_of_its_root(capsys, tmp_path, command):
    from cvpipe.data.formats import write_dataset

    source = tmp_path / "other"
    write_dataset(make_shapes(tmp_path / "src", "train", n=2), source, "coco", "train")
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    split = "train/../../other/train"
    args = (["check", tmp_path / "other", "--format", "coco", "--fix", tmp_path / "fixed"] if command == "check"
            else ["convert", tmp_path / "other", "--from", "coco", "--to", "coco", "--out", tmp_path / "fixed"])
    code, text = cli(capsys, "data", *args, "--split", split)
    assert code == 2 and "no '..'" in text
    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "fixed").exists() and not list(tmp_path.glob(".fixed*"))


@pytest.mark.parametrize("split", ["../other/train", "/etc", "train/../../x"])
def test_a_pipeline_split_stays_inside_data_root(capsys, trained, split):
    pipeline, _, _ = trained
    code, text = cli(capsys, "validate", pipeline, "--set", f"data.train={split}")
    assert code == 2 and "data.train" in text and "inside data.root" in text


def test_undecodable_and_longest_file_names_are_handled(capsys, trained, tmp_path):
    import os

    pipeline, _, val = trained
    folder = tmp_path / "names"
    folder.mkdir()
    good = sorted(val.glob("*.png"))
    longest = "a" * 251 + ".png"  # 255 bytes: the file system's limit
    shutil.copy(good[0], folder / longest)
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as f:  # Latin-1, not UTF-8
        f.write(good[1].read_bytes())
    out = tmp_path / "pred"
    code, text = cli(capsys, "predict", pipeline, "--source", folder, "--out", out, "--conf", "0")
    assert code == 0 and "caf\\xe9.png" in text
    skipped = (out / "skipped.txt").read_text()
    assert skipped.startswith("caf\\xe9.png: ") and "not valid UTF-8" in skipped
    assert [i["file_name"] for i in json.loads((out / "images.json").read_text())["images"]] == [longest]
    assert (out / "images" / longest).is_file()


def test_temporary_names_stay_within_the_file_systems_limit(tmp_path):
    import os

    from cvpipe.fetch import atomic_copy
    from cvpipe.io.images import write_bytes
    from cvpipe.paths import part_path
    from cvpipe.viz.plots import per_class_ap

    for name in ("a" * 251 + ".png", "é" * 125 + ".png", "x" * 251 + ".mp4"):  # 255 bytes each
        assert len(os.fsencode(name)) <= 255 and len(os.fsencode(part_path(tmp_path / name).name)) <= 255
        assert part_path(tmp_path / name, keep_suffix=True).suffix == Path(name).suffix
        write_bytes(tmp_path / "a" / name, b"data")
        atomic_copy(tmp_path / "a" / name, tmp_path / "b" / name)
        assert (tmp_path / "b" / name).read_bytes() == b"data"
    per_class_ap({"a": 0.5}, tmp_path / ("p" * 251 + ".png"))
    assert not list(tmp_path.rglob(".*part*"))


# ----------------------------------------------------------------------------- YAML that never ends


def _laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, words", [
    (_laughs(), "once its aliases are expanded"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested more than"),
    ("a: " + "{b: " * 500 + "1" + "}" * 500 + "\n", "nested more than"),
    ("a: &a [1, *a]\n", "contains it"),
    ("a: &a {b: *a}\n", "contains it"),
    ("".join(f"k{i}: &k{i} 1\n" for i in range(300)) + "l: [" + ", ".join(f"*k{i}" for i in range(300)) + "]\n",
     "aliases"),
])
def test_yaml_that_would_never_end_is_refused_quickly(capsys, tmp_path, text, words):
    import time

    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    start = time.perf_counter()
    code, out = cli(capsys, "validate", path)
    assert code == 2 and words in out and str(path) in out
    assert time.perf_counter() - start < 5
    code, out = cli(capsys, "validate", path, "--set", f"name={_laughs().splitlines()[-1].split(': ', 1)[1]}")
    assert code == 2


def test_a_yolo_data_yaml_that_never_ends_is_a_data_error(capsys, tmp_path):
    root = tmp_path / "yolo"
    (root / "images" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text(_laughs())
    code, text = cli(capsys, "data", "check", root, "--format", "yolo", "--split", "train")
    assert code == 2 and "data.yaml" in text and "aliases are expanded" in text


def test_aliases_within_bounds_still_load(tmp_path):
    from cvpipe.safe_yaml import load_yaml

    assert load_yaml("size: &s 320\nmin: *s\nmax: *s\nlist: &l [1, 2]\nagain: *l\n", "x") == {
        "size": 320, "min": 320, "max": 320, "list": [1, 2], "again": [1, 2]}


# ----------------------------------------------------------------------------- resume into another run's folder


def test_resume_into_a_folder_another_model_wrote_is_refused(capsys, trained, tmp_path):
    pipeline, best, val = trained
    out = tmp_path / "pred"
    assert cli(capsys, "predict", pipeline, "--source", val, "--out", out, "--conf", "0")[0] == 0
    before = (out / "detections.csv").read_bytes()
    last = best.with_name("last.pt")
    code, text = cli(capsys, "predict", pipeline, "--source", val, "--out", out, "--weights", last, "--resume")
    assert code == 2 and "another model" in text and "weights" in text and "last.pt" in text
    code, text = cli(capsys, "predict", pipeline, "--source", val, "--out", out, "--resume", "--set", "name=other")
    assert code == 2 and "pipeline" in text
    assert (out / "detections.csv").read_bytes() == before
    code, text = cli(capsys, "predict", pipeline, "--source", val, "--out", out, "--resume", "--conf", "0")
    assert code == 0 and "4 done earlier" in text  # the same model resumes


# ----------------------------------------------------------------------------- memory that grows with the classes


def test_plots_of_a_thousand_classes_stay_small(tmp_path):
    from PIL import Image

    from cvpipe.viz import plots

    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 2, (1000, 1000)) * (rng.random((1000, 1000)) < 0.001)
    np.fill_diagonal(confusion, 5)
    confusion[7, 993] = 40  # the most confused pair must be shown
    tracemalloc.start()
    plots.confusion_matrix(confusion, [f"class {k}" for k in range(1000)], tmp_path / "confusion.png")
    plots.per_class_ap({f"class {k}": k / 1000 for k in range(1000)}, tmp_path / "per_class.png")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 300 << 20
    for name in ("confusion.png", "per_class.png"):
        width, height = Image.open(tmp_path / name).size
        assert width * height < 4000 * 4000, name
    assert set(plots.most_confused(confusion)[:2]) <= set(plots.most_confused(confusion)) and \
        {7, 993} <= set(plots.most_confused(confusion).tolist())


# ----------------------------------------------------------------------------- video outputs whose names collide


def test_several_sources_whose_names_collide_get_one_file_each(capsys, trained, tmp_path):
    from cvpipe.engine.video import unique_stems

    assert unique_stems(["a/x.mp4", "b/x.mp4", "x_2.mp4", "X.mp4"]) == ["x", "x_2", "x_2_2", "X_3"]
    pipeline, _, val = trained
    sources = [tmp_path / "a" / "x", tmp_path / "b" / "x", tmp_path / "x_2"]
    for source in sources:
        shutil.copytree(val, source)
    out = tmp_path / "video"
    code, text = cli(capsys, "video", pipeline, "--source", *sources, "--out", out, "--max-frames", "2")
    assert code == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["x.mp4", "x_2.mp4", "x_2_2.mp4"]
    assert all(json.loads(p.read_text())["frames"] == 2 for p in out.glob("*.summary.json"))


# ----------------------------------------------------------------------------- signals and kills


def test_sigterm_is_handled_as_ctrl_c():
    """In a fresh process: this test process may hold OpenVINO's worker threads (the deployment tests), and taking
    a SIGTERM there crashed it."""
    script = """
import os, signal, sys
from cvpipe.cli import terminate_as_interrupt
before = signal.getsignal(signal.SIGTERM)
try:
    with terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100000):  # the handler runs between bytecodes
            pass
except KeyboardInterrupt:
    print("interrupted", signal.getsignal(signal.SIGTERM) == before)
"""
    import os

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "interrupted True", done.stderr[-2000:]


def test_sigterm_during_video_keeps_the_recording(trained, tmp_path):
    import os
    import signal
    import time

    import cv2

    pipeline, _, val = trained
    folder = tmp_path / "frames"
    folder.mkdir()
    images = sorted(val.glob("*.png"))
    for k in range(400):
        shutil.copy(images[k % len(images)], folder / f"{k:04d}.png")
    out = tmp_path / "video" / "frames.mp4"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-m", "cvpipe", "video", str(pipeline), "--source", str(folder),
                                "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    jsonl = out.with_suffix(".jsonl")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not jsonl.exists() or jsonl.read_text().count("\n") < 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]
    summary = json.loads(out.with_name("frames.summary.json").read_text())
    assert summary["stopped"] == "interrupted" and 3 <= summary["frames"] < 400
    capture = cv2.VideoCapture(str(out))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["frames"]
    assert not list(out.parent.glob(".*part*"))


def test_a_dataset_copy_that_fails_half_way_leaves_nothing(capsys, tmp_path, monkeypatch):
    from cvpipe.data.formats import write_dataset

    source = tmp_path / "coco"
    for split in ("train", "val"):
        write_dataset(make_shapes(tmp_path / "src", split, n=2), source, "coco", split)
    import cvpipe.data.formats as formats

    real = formats.write_dataset

    def killed_on_val(dataset, out, fmt, split, **kw):
        if split == "val":
            raise KeyboardInterrupt  # what SIGTERM becomes
        return real(dataset, out, fmt, split, **kw)

    monkeypatch.setattr(formats, "write_dataset", killed_on_val)
    code, text = cli(capsys, "data", "convert", source, "--from", "coco", "--to", "yolo", "--out", tmp_path / "yolo")
    assert code == 130
    assert not (tmp_path / "yolo").exists() and not list(tmp_path.glob(".yolo*"))
    monkeypatch.setattr(formats, "write_dataset", real)
    code, text = cli(capsys, "data", "convert", source, "--from", "coco", "--to", "yolo", "--out", tmp_path / "yolo")
    assert code == 0 and (tmp_path / "yolo" / "data.yaml").is_file()


# ----------------------------------------------------------------------------- the live page under viewers


def test_a_frame_is_encoded_once_however_many_wait_for_it():
    import threading

    from cvpipe.io.live_view import LatestFrame

    frame = LatestFrame()
    got = []
    threads = [threading.Thread(target=lambda: got.append(frame.newer_than(0, timeout=10))) for _ in range(30)]
    for thread in threads:
        thread.start()
    frame.publish(np.zeros((480, 640, 3), np.uint8))
    for thread in threads:
        thread.join()
    assert frame.encoded == 1 and len({seq for seq, _ in got}) == 1 and all(data for _, data in got)
    frame.publish(np.ones((480, 640, 3), np.uint8))
    frame.publish(np.full((480, 640, 3), 2, np.uint8))  # two frames before anyone asks: only the newest is encoded
    assert [frame.newer_than(1, timeout=1)[0] for _ in range(5)] == [3] * 5 and frame.encoded == 2


def test_viewers_past_the_cap_are_turned_away_and_come_back(live_view, monkeypatch):
    import socket
    import threading

    import cvpipe.io.live_view as live

    view, port = live_view
    view.viewers = threading.BoundedSemaphore(2)
    streams = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(f"GET /stream/0.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert s.recv(64).startswith(b"HTTP/1.1 200")
        streams.append(s)
    assert _get(port, "/stream/0.mjpg")[0] == 503
    assert _get(port, "/stats.json")[0] == 200  # the page itself still answers
    for s in streams:
        s.close()
    view.publish(0, np.zeros((32, 48, 3), np.uint8), {"fps": 1.0})  # the viewers' threads notice they left
    deadline = __import__("time").monotonic() + 10
    while _get(port, "/stream/0.mjpg")[0] != 200:
        assert __import__("time").monotonic() < deadline
    assert live.MAX_VIEWERS >= 10


def test_the_page_serves_on_ipv6_loopback():
    import socket

    from cvpipe.io.live_view import LiveView

    try:  # the machine's own IPv6 loopback, tried without cvpipe: only its absence skips the test
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"no IPv6 loopback on this machine ({e})")
    view = LiveView("[::1]:0", ["a"])
    try:
        port = int(view.url.rsplit(":", 1)[1].strip("/"))
        assert view.url.startswith("http://[::1]:")
        assert _get(port, "/stats.json", f"[::1]:{port}", address="::1")[0] == 200
    finally:
        view.close()


# ----------------------------------------------------------------------------- caches that lie


def test_a_garbage_or_half_written_onnx_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    import cvpipe.engine.onnx_graph as export
    from cvpipe.engine.runtime import _cached_onnx
    from cvpipe.loading import load_pipeline

    monkeypatch.setenv("CVPIPE_CACHE", str(tmp_path / "cache"))
    made = []
    monkeypatch.setattr(export, "onnx_bytes", lambda model, config, classes: made.append(1) or b"graph")
    config = load_pipeline(shapes_pipeline_file(tmp_path, PIPELINE))
    assert _cached_onnx(None, ["a"], config, None) == b"graph" and len(made) == 1
    assert _cached_onnx(None, ["a"], config, None) == b"graph" and len(made) == 1  # from the cache
    (entry,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    for damage in (b"garbage", b"gra", b""):
        entry.write_bytes(damage)
        assert _cached_onnx(None, ["a"], config, None) == b"graph"
        assert entry.read_bytes() == b"graph"
    assert len(made) == 4
    entry.with_suffix(".sha256").unlink()  # an entry without its digest (cut between the two writes)
    assert _cached_onnx(None, ["a"], config, None) == b"graph" and len(made) == 5
