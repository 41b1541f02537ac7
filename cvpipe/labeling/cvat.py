"""CVAT for images 1.1 XML: pre-labels to upload into a CVAT task ("Upload annotations", format "CVAT 1.1"), and a
task's exported annotations read back.

Written (`write_cvat`): `annotations.xml` with the labels in its `meta` (each with a read-only number attribute
`score`), one `image` element per image (`id`, `name` = its path under the images folder, `width`, `height`) and in
it `box` (`xtl ytl xbr ybr`), `polygon` (`points` "x,y;x,y;...": an instance's outline) or `tag` (a class for
the whole image) shapes, `source="auto"`, each with its score.

Read (`read_cvat`): the same shapes from CVAT's "CVAT for images 1.1" export; other shapes (polylines, points,
masks, ellipses, skeletons) and video tracks are reported and left out.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np

from cvpipe.data.records import Dataset, Problem, Record, malformed
from cvpipe.errors import DataError
from cvpipe.io.images import image_size, write_text
from cvpipe.labeling.regions import ImageFinder, Labels, outline, polygon_box


def _label_meta(classes: list[str], name: str, size: int) -> ET.Element:
    meta = ET.Element("meta")
    task = ET.SubElement(meta, "task")
    ET.SubElement(task, "name").text = name
    ET.SubElement(task, "size").text = str(size)
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for class_name in classes:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = class_name
        ET.SubElement(label, "type").text = "any"
        attribute = ET.SubElement(ET.SubElement(label, "attributes"), "attribute")
        for key, text in (("name", "score"), ("mutable", "False"), ("input_type", "number"),
                          ("default_value", "0"), ("values", "0;1;0.00001")):
            ET.SubElement(attribute, key).text = text
    return meta


def _shape(parent: ET.Element, tag: str, class_name: str, score: float | None, **geometry: str) -> None:
    shape = ET.SubElement(parent, tag, {"label": class_name, "source": "auto", "occluded": "0", **geometry,
                                        "z_order": "0"})
    if score is not None:
        ET.SubElement(shape, "attribute", {"name": "score"}).text = f"{score:.5f}"


def write_cvat(labels: Labels, out: Path, task_name: str) -> list[str]:
    """annotations.xml under `out`. Returns the names written."""
    dataset = labels.dataset
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    root.append(_label_meta(dataset.classes, task_name, len(dataset.records)))
    for i, record in enumerate(dataset.records):
        image = ET.SubElement(root, "image", {"id": str(i), "name": record.file_name, "width": str(record.width),
                                              "height": str(record.height)})
        scores = labels.scores.get(record.file_name, np.zeros(0))
        if record.label is not None:
            _shape(image, "tag", dataset.classes[record.label], float(scores[0]) if len(scores) else None)
            continue
        for k, (box, label) in enumerate(zip(record.boxes.tolist(), record.labels.tolist())):
            score = float(scores[k]) if k < len(scores) else None
            segmentation = record.segmentations[k] if record.segmentations is not None else None
            points = outline(segmentation, record.height, record.width) if segmentation is not None else None
            if points is not None:
                _shape(image, "polygon", dataset.classes[label], score,
                       points=";".join(f"{x:.2f},{y:.2f}" for x, y in points))
            else:
                _shape(image, "box", dataset.classes[label], score,
                       **{key: f"{value:.2f}" for key, value in zip(("xtl", "ytl", "xbr", "ybr"), box)})
    ET.indent(root)
    write_text(Path(out) / "annotations.xml",
               '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")
    return ["annotations.xml"]


def _coordinates(element: ET.Element, keys: tuple[str, ...]) -> list[float] | None:
    try:
        values = [float(element.get(key, "")) for key in keys]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def _points(text: str | None) -> np.ndarray | None:
    try:
        xy = np.array([[float(v) for v in pair.split(",")] for pair in (text or "").split(";")], np.float64)
    except ValueError:
        return None
    return xy if xy.ndim == 2 and xy.shape[1] == 2 and len(xy) >= 3 and np.isfinite(xy).all() else None


def read_cvat(path: Path, images: Path, classes: list[str] | None) -> Dataset:
    """CVAT for images 1.1 XML → a Dataset of the images under `images` (problems: what was left out, and why).
    `classes` None: the labels of the file's `meta`, else the names its shapes use, in the order they appear."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{path}: not CVAT XML ({e}); export the task as 'CVAT for images 1.1'") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror})") from None
    if root.tag != "annotations":
        raise DataError(f"{path}: not CVAT XML (the root element is <{root.tag}>, not <annotations>)")
    learn = classes is None
    classes = [e.text or "" for e in root.iterfind("meta/*/labels/label/name")] if learn else list(classes)
    finder = ImageFinder(images)
    problems: list[Problem] = []
    if root.find("track") is not None:
        problems.append(malformed(str(path), "video tracks are not read; export the task as 'CVAT for images 1.1'"))
    unknown: Counter[str] = Counter()
    records = []
    for element in root.iter("image"):
        name = element.get("name", "")
        where = f"{path} image {element.get('id', '?')} ({name})"
        found = finder.find(name, where) if name else malformed(where, "the image has no name")
        if isinstance(found, Problem):
            problems.append(found)
            continue
        image, file_name = found
        record = _record(element, image, file_name, len(records) + 1, classes, where, problems, unknown, learn)
        records.append(record)
    problems += [Problem("unknown label", str(path), f"{name!r} ({count}×) is not one of the classes {classes}; "
                         "those shapes are left out (is this another task's export?)", skipped=True)
                 for name, count in unknown.items()]
    return Dataset(finder.root, ".", classes, records, problems)


def _record(element: ET.Element, image: Path, file_name: str, image_id: int, classes: list[str], where: str,
            problems: list[Problem], unknown: Counter, learn: bool) -> Record:
    boxes, labels, segmentations, label = [], [], [], None
    for k, shape in enumerate(element):
        here = f"{where} {shape.tag} {k}"
        name = shape.get("label", "")
        if shape.tag not in ("box", "polygon", "tag"):
            problems.append(malformed(here, f"<{shape.tag}> shapes are not read (box, polygon and tag are)"))
            continue
        if name not in classes and learn and name:
            classes.append(name)
        elif name not in classes:
            unknown[name] += 1
            continue
        if shape.tag == "tag":
            label = classes.index(name)
            continue
        if shape.tag == "box":
            box = _coordinates(shape, ("xtl", "ytl", "xbr", "ybr"))
            if box is None:
                problems.append(malformed(here, "xtl, ytl, xbr and ybr must be numbers"))
                continue
            if _coordinates(shape, ("rotation",)) not in (None, [0.0]):
                problems.append(malformed(here, f"a box rotated by {shape.get('rotation')}°; boxes here are "
                                                "upright: straighten it in CVAT"))
                continue
            boxes.append(box)
            segmentations.append(None)
        else:
            xy = _points(shape.get("points"))
            if xy is None:
                problems.append(malformed(here, "points must be at least 3 'x,y' pairs separated by ';'"))
                continue
            boxes.append(polygon_box(xy))
            segmentations.append([xy.ravel().round(2).tolist()])
        labels.append(classes.index(name))
    size = _coordinates(element, ("width", "height"))
    width, height = (int(v) for v in size) if size else image_size(image)
    record = Record(path=image, file_name=file_name, image_id=image_id, width=width, height=height,
                    boxes=np.array(boxes, np.float32).reshape(-1, 4), labels=np.array(labels, np.int64), label=label)
    if segmentations and all(s is not None for s in segmentations):
        record.segmentations = segmentations
    return record
