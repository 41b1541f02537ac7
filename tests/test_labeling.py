"""`cvpipe label export` and `import`: pre-labels as Label Studio tasks and CVAT XML (read back by the tools' own
readers: Label Studio's SDK, Datumaro's CVAT importer), corrected labels back into a dataset, nothing lost or
moved on the way; and the files a user or another project brings, each reported by name."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cvpipe.cli import LABEL_FORMATS
from cvpipe.data.formats import read_dataset
from cvpipe.data.records import Dataset, Record, decode_segmentations
from cvpipe.data.synthetic import make_shapes
from cvpipe.errors import CvpipeError
from cvpipe.io.images import read_image, write_image
from cvpipe.labeling.audit import box_findings, class_findings, ranked
from cvpipe.labeling.cvat import read_cvat, write_cvat
from cvpipe.labeling.label_studio import read_label_studio, write_label_studio
from cvpipe.labeling.prelabel import FORMATS
from cvpipe.labeling.regions import Labels
from cvpipe.labeling.select import disagreement, k_center, uncertainty
from cvpipe.ops.detections import Detections

from .conftest import REPO, shapes_pipeline_file
from .test_classify import colours_pipeline
from .test_engine import PIPELINE
from .test_hostile import cli

OWNERS_PYTHON = REPO / ".venv-formats" / "bin" / "python"


def shapes_labels(tmp_path: Path, *, masks: bool) -> Labels:
    """Four synthetic images in a sub-folder of `tmp_path/images`, their shapes as pre-labels with scores."""
    dataset = make_shapes(tmp_path / "images", "nested", n=4)
    records = [Record(r.path, f"nested/{r.file_name}", r.image_id, r.width, r.height, r.boxes, r.labels,
                      r.segmentations if masks else None) for r in dataset.records]
    rng = np.random.default_rng(0)
    scores = {r.file_name: rng.uniform(0.3, 1.0, len(r.boxes)).round(5) for r in records}
    return Labels(Dataset(tmp_path / "images", ".", dataset.classes, records), scores, "shapes best.pt")


def mask_iou(a, b, height: int, width: int) -> float:
    a, b = (decode_segmentations([s], height, width)[0].astype(bool) for s in (a, b))
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("tool", ["labelstudio", "cvat"])
def test_pre_labels_come_back_unchanged(tmp_path, tool):
    """Boxes to 1e-3 px, classes, image names under their sub-folder; instances as polygons whose masks cover the
    originals (IoU ≥ 0.75 on these 12–32 px shapes: the outline runs through the boundary pixels' centres)."""
    for masks in (False, True):
        labels = shapes_labels(tmp_path / str(masks), masks=masks)
        out = tmp_path / str(masks) / tool
        if tool == "labelstudio":
            write_label_studio(labels, out)
            back = read_label_studio(out / "tasks.json", labels.dataset.root, labels.dataset.classes, predictions=True)
            unlabeled = read_label_studio(out / "tasks.json", labels.dataset.root, labels.dataset.classes)
            assert not unlabeled.records and {p.kind for p in unlabeled.problems} == {"not labeled"}
        else:
            write_cvat(labels, out, "shapes")
            back = read_cvat(out / "annotations.xml", labels.dataset.root, labels.dataset.classes)
        assert not back.problems and back.classes == labels.dataset.classes
        assert [r.file_name for r in back.records] == [r.file_name for r in labels.dataset.records]
        for ours, theirs in zip(labels.dataset.records, back.records):
            assert (theirs.width, theirs.height) == (ours.width, ours.height)
            assert theirs.labels.tolist() == ours.labels.tolist()
            if not masks:
                np.testing.assert_allclose(theirs.boxes, ours.boxes, atol=1e-3)
                continue
            assert len(theirs.segmentations) == len(ours.segmentations)
            for a, b in zip(ours.segmentations, theirs.segmentations):
                assert mask_iou(a, b, ours.height, ours.width) >= 0.75


def test_image_classes_come_back_unchanged(tmp_path):
    root = tmp_path / "images"
    dataset = make_shapes(root, ".", n=3)
    records = [Record(r.path, r.file_name, r.image_id, r.width, r.height, label=k % 2)
               for k, r in enumerate(dataset.records)]
    labels = Labels(Dataset(root, ".", ["square", "disc"], records), {r.file_name: np.array([0.75]) for r in records})
    write_label_studio(labels, tmp_path / "ls")
    assert "<Choices" in (tmp_path / "ls" / "label_config.xml").read_text()
    write_cvat(labels, tmp_path / "cvat", "classes")
    for back in (read_label_studio(tmp_path / "ls" / "tasks.json", root, ["square", "disc"], predictions=True),
                 read_cvat(tmp_path / "cvat" / "annotations.xml", root, ["square", "disc"])):
        assert [r.label for r in back.records] == [0, 1, 0] and not back.problems


OWNERS_SCRIPT = r"""
import json, sys
from pathlib import Path
from label_studio_sdk.converter import Converter
from label_studio_sdk.label_interface import LabelInterface
import datumaro as dm

ls, cvat, out = (Path(p) for p in sys.argv[1:4])
config = (ls / "label_config.xml").read_text()
tasks = json.loads((ls / "tasks.json").read_text())
interface = LabelInterface(config)
valid = [interface.validate_prediction(p) for t in tasks for p in t["predictions"]]
# as if each pre-label had been accepted as the annotation: Label Studio's converter to COCO
accepted = [dict(t, id=i + 1, annotations=[{"id": i + 1, "result": t["predictions"][0]["result"]}])
            for i, t in enumerate(tasks)]
(out / "accepted.json").write_text(json.dumps(accepted))
Converter(config=config, project_dir=None, download_resources=False).convert_to_coco(
    str(out / "accepted.json"), str(out / "ls_coco"), is_dir=False)
coco = json.loads((out / "ls_coco" / "result.json").read_text())
names = {c["id"]: c["name"] for c in coco["categories"]}
files = {i["id"]: i["file_name"] for i in coco["images"]}
label_studio = [[files[a["image_id"]], names[a["category_id"]], a["bbox"], a["segmentation"]]
                for a in coco["annotations"]]
found = dm.Dataset.import_from(str(cvat / "annotations.xml"), "cvat")
labels = found.categories()[dm.AnnotationType.label]
datumaro = [[item.id, labels[a.label].name, a.type.name, [round(v, 3) for v in a.get_bbox()],
             a.attributes.get("score")] for item in found for a in item.annotations]
print(json.dumps({"valid": valid, "label_studio": label_studio, "datumaro": datumaro}))
"""


def owners_read(ls: Path, cvat: Path, images: Path, tmp_path: Path) -> dict:
    """What Label Studio's SDK and Datumaro read from our files (in their own venv: `make test` builds it)."""
    if not OWNERS_PYTHON.exists():
        pytest.skip(f"{OWNERS_PYTHON}: the labeling tools' readers are not installed (`make test` installs them)")
    folder = tmp_path / "owners"
    folder.mkdir()
    # Datumaro's CVAT layout: annotations.xml with the images under images/ beside it
    shutil.copy(cvat / "annotations.xml", folder / "annotations.xml")
    (folder / "images").symlink_to(images)
    done = subprocess.run([str(OWNERS_PYTHON), "-c", OWNERS_SCRIPT, str(ls), str(folder), str(folder)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_tools_own_readers_accept_the_files(tmp_path):
    """Label Studio's SDK: every prediction valid against the exported labeling interface, and its COCO converter
    reads the boxes and polygons back; Datumaro's CVAT importer reads the boxes, polygons, labels and scores."""
    for masks in (False, True):
        labels = shapes_labels(tmp_path / str(masks), masks=masks)
        root = tmp_path / str(masks)
        write_label_studio(labels, root / "labelstudio")
        write_cvat(labels, root / "cvat", "shapes")
        read = owners_read(root / "labelstudio", root / "cvat", labels.dataset.root, root)
        assert read["valid"] and all(read["valid"])
        objects = [(r.file_name, k, r) for r in labels.dataset.records for k in range(len(r.labels))]
        assert len(read["label_studio"]) == len(read["datumaro"]) == len(objects)
        classes = labels.dataset.classes
        for (name, k, record), (url, cls, bbox, polygon), (item, dm_cls, kind, dm_box, score) in zip(
                objects, read["label_studio"], read["datumaro"]):
            assert url.endswith(name) and item == name.rsplit(".", 1)[0]
            assert cls == dm_cls == classes[record.labels[k]]
            assert score == pytest.approx(labels.scores[name][k], abs=1e-5)
            x1, y1, x2, y2 = record.boxes[k].tolist()
            if not masks:
                assert kind == "bbox" and not polygon
                np.testing.assert_allclose(bbox, [x1, y1, x2 - x1, y2 - y1], atol=1e-3)
                np.testing.assert_allclose(dm_box, [x1, y1, x2 - x1, y2 - y1], atol=1e-2)
            else:  # the polygon's box lies within the mask's, at most a pixel in from each side
                assert kind == "polygon" and polygon
                px, py, pw, ph = dm_box
                assert x1 <= px <= x1 + 1 and y1 <= py <= y1 + 1 and x2 - 1 <= px + pw <= x2 and y2 - 1 <= py + ph <= y2
                rle = mask_utils.frPyObjects(polygon, record.height, record.width)
                ours = decode_segmentations([record.segmentations[k]], record.height, record.width)[0]
                theirs = mask_utils.decode(mask_utils.merge(rle))
                assert (ours & theirs).sum() / (ours | theirs).sum() >= 0.75


def test_the_formats_the_cli_offers_are_those_written():
    assert set(LABEL_FORMATS) == set(FORMATS)


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


@pytest.mark.assets
def test_export_then_import_loses_and_moves_no_box(tmp_path, capsys, photos, monkeypatch):
    """The COCO SSD's pre-labels of the real photos, in every format; Label Studio's and CVAT's files imported back
    as datasets hold every box where the predictions put it (to 0.01 px), and pass `data check`; the photos are
    unchanged."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(photos, tmp_path / "photos")
    before = digest(tmp_path / "photos")
    code, text = cli(capsys, "label", "export", REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml", "--source",
                     "photos", "--out", "pre", "--format", *LABEL_FORMATS)
    assert code == 0, text
    predicted = json.loads((tmp_path / "pre" / "predictions" / "results.json").read_text())
    names = {i["id"]: i["file_name"] for i in json.loads((tmp_path / "pre" / "predictions" / "images.json").read_text())
             ["images"]}
    expected = sorted((names[r["image_id"]], r["category_id"] - 1, *np.round(r["bbox"], 2)) for r in predicted)
    assert len(expected) >= 5 and f"{len(expected)} objects" in text
    for tool, file in (("labelstudio", "tasks.json"), ("cvat", "annotations.xml")):
        code, text = cli(capsys, "label", "import", REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml",
                         tmp_path / "pre" / tool / file, "--images", "photos", "--out", f"back_{tool}", "--format",
                         "coco", "--predictions")
        assert code == 0 and "data check: no problem" in text, text
        back = read_dataset(tmp_path / f"back_{tool}", "coco", "train")
        got = sorted((r.file_name, int(label), *np.round([x1, y1, x2 - x1, y2 - y1], 2))
                     for r in back.records for (x1, y1, x2, y2), label in zip(r.boxes.tolist(), r.labels))
        assert [g[:2] for g in got] == [e[:2] for e in expected]
        np.testing.assert_allclose([g[2:] for g in got], [e[2:] for e in expected], atol=0.011)
    for fmt in ("coco", "voc", "yolo"):  # the pre-labels as datasets: every box, to YOLO's precision
        dataset = read_dataset(tmp_path / "pre" / fmt, fmt, "train", back.classes)
        assert sum(len(r.boxes) for r in dataset.records) == len(expected)
    assert digest(tmp_path / "photos") == before


def bad_label_studio(tmp_path: Path) -> tuple[Path, Path]:
    """Tasks of shapes images: good, another project's label, a missing image, a name leading out of the folder,
    a rotated box, a brush region, not a task at all."""
    labels = shapes_labels(tmp_path, masks=False)
    write_label_studio(labels, tmp_path / "ls")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    foreign = json.loads(json.dumps(tasks[1]))
    foreign["predictions"][0]["result"][0]["value"]["rectanglelabels"] = ["giraffe"]
    missing = dict(tasks[2], data={"image": "/data/local-files/?d=nested/gone.png"})
    outside = dict(tasks[3], data={"file": "../../../../etc/passwd"})
    rotated = json.loads(json.dumps(tasks[0]))
    rotated["predictions"][0]["result"][0]["value"]["rotation"] = 30
    rotated["predictions"][0]["result"].append({"type": "brushlabels", "value": {"brushlabels": ["disc"]}})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([tasks[0], foreign, missing, outside, rotated, "not a task"]))
    return path, labels.dataset.root


def test_what_a_labeling_tool_file_brings_is_reported_and_the_rest_imported(tmp_path, capsys):
    pipeline = shapes_pipeline_file(tmp_path, PIPELINE, "shapes.yaml")
    path, images = bad_label_studio(tmp_path)
    code, text = cli(capsys, "label", "import", pipeline, path, "--images", images, "--out", tmp_path / "back",
                     "--predictions")
    assert code == 0, text
    for said in ("'giraffe' (1×) is not one of the classes", "gone.png is not under", "points outside the dataset root",
                 "rotated by 30°", "'brushlabels' regions are not read", "a task is a mapping"):
        assert said in text, (said, text)
    back = read_dataset(tmp_path / "back", "coco", "train")
    assert len(back.records) == 3  # the good task, the foreign one (less its unknown box), the rotated one (less it)
    assert all("passwd" not in r.file_name for r in back.records)
    # nothing of ours in it: one message, nothing written
    code, text = cli(capsys, "label", "import", pipeline, path, "--images", tmp_path / "src", "--out",
                     tmp_path / "none")
    assert code == 2 and "no labeled image" in text and not (tmp_path / "none").exists()
    for content, said in (("{", "not Label Studio JSON"), ('{"tasks": 1}', "expected a list of tasks"),
                          ("[" * 100_000, "nested too deeply")):
        (tmp_path / "broken.json").write_text(content)
        code, text = cli(capsys, "label", "import", pipeline, tmp_path / "broken.json", "--images", images, "--out",
                         tmp_path / "x")
        assert code == 2 and said in text, text
    code, text = cli(capsys, "label", "import", pipeline, tmp_path / "tasks.csv", "--images", images, "--out",
                     tmp_path / "x")
    assert code == 2 and "expected Label Studio JSON (.json) or CVAT" in text
    code, text = cli(capsys, "label", "import", pipeline, path, "--images", images, "--out", tmp_path / "back",
                     "--predictions")
    assert code == 2 and "exists and is not empty" in text


def test_a_cvat_file_with_shapes_we_do_not_read(tmp_path, capsys):
    pipeline = shapes_pipeline_file(tmp_path, PIPELINE, "shapes.yaml")
    labels = shapes_labels(tmp_path, masks=False)
    write_cvat(labels, tmp_path / "cvat", "shapes")
    root = ET.parse(tmp_path / "cvat" / "annotations.xml").getroot()
    first, second = root.findall("image")[:2]
    first.find("box").set("rotation", "15")
    ET.SubElement(first, "polyline", {"label": "disc", "points": "1,2;3,4"})
    second.set("name", "../../outside.png")
    ET.SubElement(root, "track", {"id": "0", "label": "disc"})
    (tmp_path / "bad.xml").write_text(ET.tostring(root, encoding="unicode"))
    code, out = cli(capsys, "label", "import", pipeline, tmp_path / "bad.xml", "--images", labels.dataset.root,
                    "--out", tmp_path / "back")
    assert code == 0, out
    for said in ("rotated by 15", "<polyline> shapes are not read", "points outside the dataset root",
                 "video tracks are not read"):
        assert said in out, (said, out)
    assert len(read_dataset(tmp_path / "back", "coco", "train").records) == 3
    (tmp_path / "broken.xml").write_text("<annotations><image")
    code, out = cli(capsys, "label", "import", pipeline, tmp_path / "broken.xml", "--images", labels.dataset.root,
                    "--out", tmp_path / "x")
    assert code == 2 and "not CVAT XML" in out


def test_label_says_which_pipelines_it_works_with(tmp_path, capsys):
    from .test_fcn import fcn_pipeline

    code, text = cli(capsys, "label", "export", fcn_pipeline(tmp_path), "--source", tmp_path)
    assert code == 2 and "labels are read and written for detection, instance segmentation and classification" in text


# ----------------------------------------------------------------------------- audit


def test_each_kind_of_label_error_by_hand():
    """Labels against predictions (confident from 0.5), each rule once, scores computed by hand."""
    def record(boxes, labels):
        return Record(Path("x.png"), "x.png", 1, 100, 60, np.array(boxes, np.float32), np.array(labels, np.int64))

    labels = record([[0, 0, 10, 10],        # A: a prediction on it (IoU 1): right
                     [20, 0, 30, 10],       # B: the only prediction of its class near is 4 px off: loose
                     [40, 0, 50, 10],       # C: the model sees class 0 there at 0.8, its own class at 0.3
                     [60, 0, 70, 10],       # D: the model sees something there at 0.2 only: spurious
                     [0, 0, 10, 10.5],      # E: A again: duplicate
                     [0, 40, 10, 50]], [0, 0, 1, 0, 0, 1])  # F: matched at IoU 8/12: loose
    predictions = record([[0, 0, 10, 10], [24, 0, 34, 10], [40, 0, 50, 10], [40, 0, 50, 10], [61, 0, 71, 10],
                          [80, 0, 90, 10], [81, 0, 91, 10], [0, 20, 10, 30], [2, 40, 12, 50]],
                         [0, 0, 0, 1, 0, 0, 0, 0, 1])
    scores = np.array([0.95, 0.9, 0.8, 0.3, 0.2, 0.7, 0.6, 0.3, 0.9])
    found = ranked(box_findings(labels, predictions, scores, ["a", "b"], "x.png", conf=0.5))
    assert [(f.kind, f.score, f.label_box[:1], f.model_box[:1]) for f in found] == [
        ("duplicate", round(100 / 105, 5), (0.0,), ()),
        ("spurious", 0.8, (60.0,), ()),
        ("missing", 0.7, (), (80.0,)),           # and not its neighbour at 81: the same object
        ("loose", round(0.9 * (1 - 60 / 140), 5), (20.0,), (24.0,)),
        ("wrong class", 0.5, (40.0,), (40.0,)),
        ("loose", round(0.9 * (1 - 8 / 12), 5), (0.0,), (2.0,)),
    ]
    assert found[4].label_class == "b" and found[4].model_class == "a"
    assert box_findings(record([], []), record([], []), np.zeros(0), ["a"], "x.png", conf=0.5) == []
    image_class = Record(Path("x.png"), "x.png", 1, 10, 10, label=1)
    said = class_findings(image_class, Record(Path("x.png"), "x.png", 1, 10, 10, label=0), np.array([0.875]),
                          ["a", "b"], "x.png")
    assert [(f.kind, f.score, f.label_class, f.model_class) for f in said] == [("wrong class", 0.875, "b", "a")]


@pytest.mark.assets
def test_the_audit_finds_each_corruption_of_real_photos_labels(tmp_path, capsys, photos, monkeypatch):
    """The COCO SSD's confident detections of the photos taken as labels, then one of each error made by hand:
    a person dropped, a box on the sky, a cat called a dog, a motorcycle's box moved by 40 % of its width, a tie
    labeled twice. The audit lists exactly those five, drawn on its page."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(photos, tmp_path / "photos")
    pipeline = REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml"
    assert cli(capsys, "label", "export", pipeline, "--source", "photos", "--out", "pre", "--format", "coco",
               "--conf", "0.5")[0] == 0
    annotations = tmp_path / "pre" / "coco" / "train" / "annotations.json"
    coco = json.loads(annotations.read_text())
    category = {c["name"]: c["id"] for c in coco["categories"]}
    image = {i["file_name"]: i["id"] for i in coco["images"]}
    named = {(next(f for f, i in image.items() if i == a["image_id"]), a["category_id"]): a for a in coco["annotations"]}
    person, cat = named[("grace_hopper.jpg", category["person"])], named[("chelsea.png", category["cat"])]
    motorcycle, tie = named[("motorcycle_left.png", category["motorcycle"])], named[("grace_hopper.jpg", category["tie"])]
    coco["annotations"].remove(person)
    cat["category_id"] = category["dog"]
    motorcycle["bbox"][0] += 0.4 * motorcycle["bbox"][2]
    coco["annotations"] += [dict(tie, id=1000, bbox=[v + 2 for v in tie["bbox"][:2]] + tie["bbox"][2:]),
                            {"id": 1001, "image_id": image["rocket.jpg"], "category_id": category["person"],
                             "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0}]
    annotations.write_text(json.dumps(coco))
    code, text = cli(capsys, "label", "audit", pipeline, "--set", f"data.root={tmp_path / 'pre' / 'coco'}",
                     "data.format=coco", "data.train=train", "--out", "audit", "--conf", "0.5")
    assert code == 0 and "not trained on these labels" in text, text
    rows = list(csv.DictReader((tmp_path / "audit" / "audit.csv").open()))
    assert sorted((r["kind"], r["file"], r["class"], r["model_class"]) for r in rows) == [
        ("duplicate", "grace_hopper.jpg", "tie", ""), ("loose", "motorcycle_left.png", "motorcycle", "motorcycle"),
        ("missing", "grace_hopper.jpg", "", "person"), ("spurious", "rocket.jpg", "person", ""),
        ("wrong class", "chelsea.png", "dog", "cat")]
    page = (tmp_path / "audit" / "audit.html").read_text()
    assert page.count("<figure>") == 5 and "5. loose" in page


def test_out_of_fold_splits_hold_out_cells_of_sliced_images_and_whole_small_ones(tmp_path):
    """A 200 × 100 image the pipeline slices at 100 px (two cells) and an 80 × 80 one it does not (one unit), in
    three folds: each fold's training copy lacks exactly its unit: the cell painted with the image's mean colour
    and the labels centred in it gone (one crossing the border, centred outside, kept), or the small image."""
    from cvpipe.labeling.folds import deal, training_split
    from cvpipe.loading import load_pipeline

    big = np.zeros((100, 200, 3), np.uint8)
    big[:, :100] = (200, 100, 0)
    big[:, 100:] = (0, 100, 200)
    write_image(tmp_path / "big.png", big)
    write_image(tmp_path / "small.png", np.full((80, 80, 3), 50, np.uint8))
    records = [Record(tmp_path / "big.png", "big.png", 0, 200, 100,
                      np.array([[10, 10, 30, 30], [80, 40, 110, 60], [150, 20, 170, 40]], np.float32),
                      np.array([0, 1, 0])),
               Record(tmp_path / "small.png", "small.png", 1, 80, 80, np.array([[5, 5, 20, 20]], np.float32),
                      np.array([1]))]
    dataset = Dataset(tmp_path, "train", ["a", "b"], records)
    config = load_pipeline(shapes_pipeline_file(tmp_path, PIPELINE), ["tiling.mode=always", "tiling.size=100"])
    folds = deal(config, dataset, 3)
    assert folds.grid == {"big.png": (100, 2, 1), "small.png": (None, 1, 1)} and folds.units == 3
    units = {(name, cell): f for name, cells in folds.fold.items() for cell, f in cells.items()}
    assert sorted(units) == [("big.png", (0, 0)), ("big.png", (1, 0)), ("small.png", (0, 0))]
    assert sorted(units.values()) == [0, 1, 2]
    assert folds.folds_at("big.png", records[0].boxes).tolist() == [units[("big.png", (0, 0))]] * 2 + [
        units[("big.png", (1, 0))]]  # the crossing box is centred at x = 95: the left cell
    assert folds.cell_at("big.png", 250, -3) == (1, 0)  # outside the image: its nearest cell
    for (name, (column, _)), fold in units.items():
        split = training_split(dataset, folds, fold, tmp_path / f"fold{fold}")
        names = [r.file_name for r in split.records]
        if name == "small.png":
            assert names == ["big.png"] and split.records[0].path == tmp_path / "big.png"
            continue
        assert names == ["big.png", "small.png"]
        painted = read_image(split.records[0].path)
        left, right = painted[:, :100], painted[:, 100:]
        held, kept = (right, left) if column == 1 else (left, right)
        assert (held == (100, 100, 100)).all()
        np.testing.assert_array_equal(kept, big[:, 100:] if column == 0 else big[:, :100])
        expected = [[150, 20, 170, 40]] if column == 0 else [[10, 10, 30, 30], [80, 40, 110, 60]]
        assert split.records[0].boxes.tolist() == expected
        assert read_image(tmp_path / "big.png").tolist() == big.tolist()  # the source is never changed
    with pytest.raises(CvpipeError, match="--folds 4: the train split has 3 unit"):
        deal(config, dataset, 4)


def test_audit_with_folds_trains_models_that_never_saw_what_they_audit(tmp_path, capsys, monkeypatch):
    """`label audit --folds 2` on the shapes: two models, each trained on the images of the other fold only,
    their predictions joined into one audit that says where they came from; --resume reuses the trainings, a
    second run into the same --out without it is refused before training, and so are folds of val."""
    monkeypatch.chdir(tmp_path)
    pipeline = shapes_pipeline_file(tmp_path, PIPELINE)
    command = ["label", "audit", pipeline, "--folds", "2", "--out", "audit", "--set", "train.epochs=1"]
    code, text = cli(capsys, *command)
    assert code == 0, text
    assert "2 models trained on the train split without the labels each one audits" in text
    train = read_dataset(tmp_path / "shapes", "coco", "train", ["square", "disc"])
    held = {}
    for fold in range(2):
        split = read_dataset(tmp_path / "audit" / "folds" / "data", "coco", f"fold-{fold}", ["square", "disc"])
        held[fold] = {r.file_name for r in train.records} - {r.file_name for r in split.records}
        assert len(split.records) == 2 and (tmp_path / "audit" / "folds" / f"fold-{fold}.pt").exists()
        predicted = json.loads((tmp_path / "audit" / "predictions" / f"fold-{fold}" / "images.json").read_text())
        assert sorted(i["file_name"] for i in predicted["images"]) == sorted(held[fold])
    assert held[0] | held[1] == {r.file_name for r in train.records} and not held[0] & held[1]
    rows = list(csv.DictReader((tmp_path / "audit" / "audit.csv").open()))
    assert {r["file"] for r in rows} <= {r.file_name for r in train.records}
    runs = sorted(p.name for p in (tmp_path / "audit" / "folds" / "fold-0").iterdir())
    code, text = cli(capsys, *command, "--resume")
    assert code == 0 and "fold 1/2: trained earlier" in text and "fold 2/2: trained earlier" in text, text
    assert sorted(p.name for p in (tmp_path / "audit" / "folds" / "fold-0").iterdir()) == runs
    code, text = cli(capsys, *command)
    assert code == 2 and "holds an earlier audit's trainings" in text and "--resume" in text
    code, text = cli(capsys, *command[:-2], "--split", "val")
    assert code == 2 and "audit it without --folds" in text
    code, text = cli(capsys, *command[:3], "--folds", "1")
    assert code == 2 and "give 2 to 20" in text


def test_out_of_fold_image_classes_point_at_an_image_filed_under_the_wrong_class(tmp_path, capsys, monkeypatch):
    """Flat colours in class folders, one red image filed under green: with --folds 3 the model that never saw it
    calls it red, and it heads the audit as a wrong class."""
    monkeypatch.chdir(tmp_path)
    pipeline = colours_pipeline(tmp_path)
    train = tmp_path / "colours" / "train"
    (train / "red" / "0.png").rename(train / "green" / "red0.png")
    code, text = cli(capsys, "label", "audit", pipeline, "--folds", "3", "--out", "audit")
    assert code == 0 and "out-of-fold" in text, text
    folds = [tmp_path / "audit" / "folds" / "data" / f"fold-{fold}" for fold in range(3)]
    copies = [{p.relative_to(fold).as_posix() for p in fold.rglob("*.png")} for fold in folds]
    assert [len(c) for c in copies] == [12, 12, 12] and "green/red0.png" not in set.intersection(*copies)
    assert sum("green/red0.png" in c for c in copies) == 2  # held out of exactly one fold's copy
    rows = list(csv.DictReader((tmp_path / "audit" / "audit.csv").open()))
    assert (rows[0]["file"], rows[0]["kind"], rows[0]["class"], rows[0]["model_class"]) == (
        "green/red0.png", "wrong class", "green", "red")
    assert (train / "green" / "red0.png").exists() and len(list(train.rglob("*.png"))) == 18  # the source as it was


# ----------------------------------------------------------------------------- select


def test_uncertainty_disagreement_and_diversity_by_hand():
    assert uncertainty(np.array([0.9, 0.5, 0.2])) == pytest.approx(0.1 + 0.5 + 0.2)
    assert uncertainty(np.zeros(0)) == 0.0

    def found(boxes, labels, scores):
        return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores), np.array(labels))

    plain = found([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0, 0, 1], [0.9, 0.8, 0.6])
    views = found([[1, 0, 11, 10], [40, 0, 50, 10], [60, 0, 70, 10]], [0, 0, 0], [0.9, 0.7, 0.2])
    # confident (≥ 0.5): plain 3, views 2; matched: the first pair (IoU 9/11) only (the third differs in class)
    assert disagreement(plain, views, 0.5) == pytest.approx(1 - 1 / (3 + 2 - 1))
    assert disagreement(found([], [], []), found([], [], []), 0.5) == 0.0
    # four candidates: two near-duplicates; k-center takes the first, then the farthest each time
    features = np.array([[1, 0, 0], [0.99, 0.141, 0], [0, 1, 0], [0, 0, 1]], np.float64)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    picked, distances = k_center(features, [0, 1, 2, 3], 3)
    assert picked[0] == 0 and set(picked[1:]) == {2, 3} and distances[1] == pytest.approx(1.0)


@pytest.mark.assets
def test_select_picks_windows_of_a_large_image_with_their_pre_labels(tmp_path, capsys, photos, monkeypatch):
    """A pool of the photos and one large image (a mosaic of them), sliced into 300-px windows: the picks are
    written as images with their reasons, Label Studio tasks and CVAT XML of just those, readable back."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(photos, tmp_path / "pool")
    tiles = [cv2.resize(read_image(p), (500, 500)) for p in sorted(photos.glob("*.[jp][pn]g"))[:6]]
    write_image(tmp_path / "pool" / "large" / "mosaic.png", np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])]))
    code, text = cli(capsys, "label", "select", REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml", "--source", "pool",
                     "--budget", "4", "--out", "round1", "--set", "tiling.mode=auto", "tiling.size=300",
                     "tiling.auto_above=2")
    assert code == 0, text
    rows = list(csv.DictReader((tmp_path / "round1" / "selection.csv").open()))
    assert len(rows) == 4 and [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    # the mosaic's 5 × 4 windows, the 640-px photos' 3 × 2 (china, flower, rocket, motorcycle), four photos whole
    assert "picked 4 of 48 candidates" in text
    for row in rows:
        picture = read_image(tmp_path / "round1" / row["written_as"])
        assert picture.shape[:2] == (int(row["height"]), int(row["width"])) and "wrong calls to expect" in row["why"]
        if row["file"] == "large/mosaic.png":
            assert int(row["width"]) <= 300 and row["written_as"].startswith("images/large/mosaic_x")
    uncertain = [float(r["uncertainty"]) + float(r["disagreement"]) for r in rows]
    assert uncertain[0] == max(uncertain)  # the most uncertain first, then the farthest of the shortlist
    back = read_label_studio(tmp_path / "round1" / "labelstudio" / "tasks.json", tmp_path / "round1" / "images",
                             None, predictions=True)
    assert sorted(r.file_name for r in back.records) == sorted(r["written_as"][len("images/"):] for r in rows)
    assert len(read_cvat(tmp_path / "round1" / "cvat" / "annotations.xml", tmp_path / "round1" / "images",
                         None).records) == 4
    code, text = cli(capsys, "label", "select", REPO / "pipelines" / "coco_ssd_mobilenet_v2.yaml", "--source", "pool",
                     "--budget", "4", "--out", "round1")
    assert code == 2 and "exists and is not empty" in text
