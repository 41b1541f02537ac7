"""Readers and writers: round trips are lossless; bad files are reported by name; paths stay inside the root."""

import json
from pathlib import Path

import numpy as np
import pytest

from cvpipe.cli import main
from cvpipe.data.formats import read_dataset, write_dataset
from cvpipe.errors import DataError


def same_annotations(a, b, atol=0.0):
    assert a.classes == b.classes
    ra = sorted(a.records, key=lambda r: r.file_name)
    rb = sorted(b.records, key=lambda r: r.file_name)
    assert [r.file_name for r in ra] == [r.file_name for r in rb]
    for x, y in zip(ra, rb):
        assert (x.width, x.height) == (y.width, y.height)
        np.testing.assert_allclose(x.boxes, y.boxes, atol=atol, rtol=0)
        np.testing.assert_array_equal(x.labels, y.labels)


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_write_then_read_is_lossless(shapes, tmp_path, fmt):
    shapes.records[0].boxes[0] = [10.25, 3.5, 40.75, 33.125]  # fractional pixels survive too
    write_dataset(shapes, tmp_path / fmt, fmt, "train")
    back = read_dataset(tmp_path / fmt, fmt, "train")
    same_annotations(shapes, back, atol=1e-4 if fmt == "yolo" else 0.0)
    assert not back.problems


@pytest.mark.parametrize("route", [("voc", "coco", "voc"), ("coco", "yolo", "coco"), ("yolo", "voc", "yolo"),
                                   ("coco", "voc", "coco"), ("voc", "yolo", "voc")])
def test_cli_convert_round_trip(shapes, tmp_path, route):
    first, middle, last = route
    write_dataset(shapes, tmp_path / "a", first, "train")
    assert main(["data", "convert", str(tmp_path / "a"), "--from", first, "--to", middle, "--out", str(tmp_path / "b")]) == 0
    assert main(["data", "convert", str(tmp_path / "b"), "--from", middle, "--to", last, "--out", str(tmp_path / "c")]) == 0
    start = read_dataset(tmp_path / "a", first, "train")
    same_annotations(start, read_dataset(tmp_path / "c", last, "train"), atol=1e-4 if "yolo" in route else 0.0)


def test_coco_masks_round_trip(shapes, tmp_path):
    write_dataset(shapes, tmp_path / "c", "coco", "train")
    back = read_dataset(tmp_path / "c", "coco", "train")
    for i in range(len(shapes)):
        want, got = shapes.sample(i)["masks"], back.sample(i)["masks"]
        assert len(want) == len(got) and all(np.array_equal(m, n) for m, n in zip(want, got))
        # a mask's tight box is the record's box
        for m, box in zip(got, back.records[i].boxes):
            ys, xs = np.nonzero(m)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box.tolist()


def test_voc_reads_devkit_layout_and_reports_malformed_xml(tmp_path):
    root = tmp_path / "VOC"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages" / "a.jpg").write_bytes(b"")
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>50</width><height>40</height></size>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>20</ymax></bndbox></object>"
        "<object><name>dog</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        "</annotation>")
    (root / "Annotations" / "b.xml").write_text("<annotation><filename>b.jpg</filename><object>")
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    ds = read_dataset(root, "voc", "train", ["cat"])
    assert len(ds) == 1 and ds.records[0].path == (root / "JPEGImages" / "a.jpg").resolve()
    np.testing.assert_array_equal(ds.records[0].boxes[0], [0, 1, 30, 20])  # 1-based corners → xyxy
    kinds = sorted(p.kind for p in ds.problems)
    assert kinds == ["unknown class", "unreadable annotation"]
    assert any("b.xml" in p.where for p in ds.problems)


def test_malformed_coco_json_names_line(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "annotations.json").write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"annotations.json:2:\d+: malformed JSON"):
        read_dataset(tmp_path, "coco", "train")


def test_paths_may_not_escape_the_dataset_root(tmp_path):
    (tmp_path / "root" / "train").mkdir(parents=True)
    coco = {"images": [{"id": 1, "file_name": "../../../etc/passwd", "width": 1, "height": 1}], "annotations": [],
            "categories": []}
    (tmp_path / "root" / "train" / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="outside the dataset root"):
        read_dataset(tmp_path / "root", "coco", "train")
    with pytest.raises(DataError, match="outside the dataset root"):
        read_dataset(tmp_path / "root", "voc", "../..")


def test_yolo_reads_data_yaml_names_and_flags_unknown_ids(shapes, tmp_path):
    write_dataset(shapes, tmp_path / "y", "yolo", "train")
    label = next((tmp_path / "y" / "labels" / "train").glob("*.txt"))
    label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\nnot a box\n")
    ds = read_dataset(tmp_path / "y", "yolo", "train")
    assert ds.classes == ["square", "disc"]
    assert sorted(p.kind for p in ds.problems) == ["malformed annotation", "unknown class"]


def test_class_folders_and_semantic_masks(tmp_path):
    import cv2

    for split_class in ("train/cat", "train/dog"):
        (tmp_path / "f" / split_class).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "f" / split_class / "x.png"), np.zeros((8, 10, 3), np.uint8))
    ds = read_dataset(tmp_path / "f", "folders", "train")
    assert ds.classes == ["cat", "dog"] and [r.label for r in ds.records] == [0, 1]
    assert ds.sample(1)["label"] == 1
    for sub in ("images", "masks"):
        (tmp_path / "m" / "val" / sub).mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "m" / "val" / "images" / "a.png"), np.zeros((8, 10, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "m" / "val" / "masks" / "a.png"), np.full((8, 10), 2, np.uint8))
    ds = read_dataset(tmp_path / "m", "masks", "val", ["bg", "a", "b"])
    assert ds.sample(0)["mask"].shape == (8, 10) and int(ds.sample(0)["mask"].max()) == 2


def _named_boxes(xyxy, class_ids, classes) -> list[tuple]:
    return sorted((classes[int(c)], *np.round(np.asarray(b, np.float64), 3).tolist()) for b, c in zip(xyxy, class_ids))


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_every_writer_is_read_back_by_the_formats_owners_readers(shapes, tmp_path, fmt):
    """Judged by an independent reader (supervision's; pycocotools for COCO): same images, classes and boxes."""
    import supervision as sv

    shapes.records[0].boxes[0] = [10.25, 3.5, 40.75, 33.125]
    out = tmp_path / fmt
    write_dataset(shapes, out, fmt, "train")
    if fmt == "voc":
        theirs = sv.DetectionDataset.from_pascal_voc(str(out / "train"), str(out / "train"))
    elif fmt == "coco":
        theirs = sv.DetectionDataset.from_coco(str(out / "train"), str(out / "train" / "annotations.json"))
    else:
        theirs = sv.DetectionDataset.from_yolo(str(out / "images" / "train"), str(out / "labels" / "train"),
                                               str(out / "data.yaml"))
    ours = {r.file_name: r for r in shapes.records}
    assert sorted(Path(p).name for p, _, _ in theirs) == sorted(ours)
    assert sorted(theirs.classes) == sorted(shapes.classes)
    for path, _, detections in theirs:
        record = ours[Path(path).name]
        xyxy = detections.xyxy.astype(np.float64)
        if fmt == "voc":
            # supervision shifts all four VOC corners by one; VOC's devkit counts xmin..xmax inclusive (width =
            # xmax − xmin + 1) and detectron2 subtracts 1 from xmin, ymin only, which is cvpipe's reading. So the
            # far corners differ by exactly one pixel, by convention, and nothing else may differ.
            xyxy = xyxy + [0, 0, 1, 1]
        assert _named_boxes(xyxy, detections.class_id, theirs.classes) == \
            _named_boxes(record.boxes, record.labels, shapes.classes), path
    if fmt == "coco":
        from pycocotools.coco import COCO

        coco = COCO(str(out / "train" / "annotations.json"))
        assert len(coco.getImgIds()) == len(shapes) and len(coco.getAnnIds()) == sum(len(r.boxes) for r in shapes.records)
        first = coco.loadAnns(coco.getAnnIds(imgIds=[shapes.records[0].image_id]))
        x, y, w, h = first[0]["bbox"]
        assert [x, y, x + w, y + h] == [10.25, 3.5, 40.75, 33.125]


def test_yolo_data_yaml_path_is_what_ultralytics_resolves_to_the_yamls_folder(shapes, tmp_path, monkeypatch):
    """Ultralytics joins a relative `path` to its own datasets folder (not the yaml's), so the writer puts the
    folder's absolute path there; the split folders then resolve from any working folder."""
    import yaml

    write_dataset(shapes, tmp_path / "y", "yolo", "train")
    data = yaml.safe_load((tmp_path / "y" / "data.yaml").read_text())
    monkeypatch.chdir(tmp_path / "y" / "labels")
    assert Path(data["path"]).is_absolute() and Path(data["path"]) == (tmp_path / "y").resolve()
    assert (Path(data["path"]) / data["train"]).is_dir() and data["names"] == shapes.classes
    moved = tmp_path / "moved"
    (tmp_path / "y").rename(moved)  # cvpipe itself reads the yaml's folder, wherever it went
    assert len(read_dataset(moved, "yolo", "train")) == len(shapes)
