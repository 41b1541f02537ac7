"""`cvpipe data check` finds each kind of problem; `--fix` writes a clean copy and leaves the original alone."""

import numpy as np

from cvpipe.cli import main
from cvpipe.data.check import check_dataset, fixed_copy
from cvpipe.data.formats import read_dataset, write_dataset


def broken_voc(shapes, tmp_path):
    r = shapes.records
    r[0].boxes = np.array([[np.nan, 1, 5, 5], [20, 20, 10, 30], [5, 5, 5, 9], [-4, 2, 30, 30], [1, 1, 9, 9]], np.float32)
    r[0].labels = np.array([0, 0, 0, 1, 1])
    r[1].boxes, r[1].labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    root = tmp_path / "voc"
    write_dataset(shapes, root, "voc", "train")
    (root / "train" / r[2].file_name).write_bytes(b"not a png")  # corrupt
    (root / "train" / r[3].file_name).unlink()  # missing
    xml = root / "train" / "shape_001.xml"
    xml.write_text(xml.read_text().replace("</annotation>", "<object><name>hexagon</name><bndbox><xmin>2</xmin>"
                                           "<ymin>2</ymin><xmax>8</xmax><ymax>8</ymax></bndbox></object></annotation>"))
    return root


def test_check_reports_every_kind(shapes, tmp_path):
    root = broken_voc(shapes, tmp_path)
    ds = read_dataset(root, "voc", "train", ["square", "disc"])
    kinds = {}
    for p in check_dataset(ds):
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    assert kinds == {"NaN box": 1, "inverted box": 1, "zero-area box": 1, "out-of-bounds box": 1, "unknown class": 1,
                     "unreadable image": 1, "missing image": 1}
    # image 1 had no boxes but got the unknown one: not empty; no other image is empty
    assert "empty image" not in kinds


def test_cli_check_exit_codes_and_fix(shapes, tmp_path, capsys):
    root = broken_voc(shapes, tmp_path)
    before = sorted((p.name, p.read_bytes()) for p in (root / "train").iterdir())
    assert main(["data", "check", str(root), "--format", "voc", "--classes", "square", "disc"]) == 1
    out = capsys.readouterr().out
    assert "NaN box: 1" in out and "shape_000.png box 0" in out
    assert main(["data", "check", str(root), "--format", "voc", "--classes", "square", "disc", "--fix",
                 str(tmp_path / "clean")]) == 1
    assert sorted((p.name, p.read_bytes()) for p in (root / "train").iterdir()) == before  # never in place
    assert main(["data", "check", str(tmp_path / "clean"), "--format", "voc"]) == 0
    clean = read_dataset(tmp_path / "clean", "voc", "train")
    assert len(clean) == 2  # corrupt and missing images dropped
    first = next(r for r in clean.records if r.file_name == "shape_000.png")
    np.testing.assert_array_equal(first.boxes, [[0, 2, 30, 30], [1, 1, 9, 9]])  # clipped one kept, bad ones gone


def test_fixed_copy_counts(shapes, tmp_path):
    root = broken_voc(shapes, tmp_path)
    ds = read_dataset(root, "voc", "train", ["square", "disc"])
    _, counts = fixed_copy(ds, check_dataset(ds))
    assert counts == {"images dropped": 2, "boxes dropped": 4, "boxes clipped": 1}
