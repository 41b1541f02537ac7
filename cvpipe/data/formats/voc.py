"""Pascal VOC XML: one file per image; 1-based inclusive corners (x1 = xmin - 1, as detectron2 reads them).

VOC has no class list; the writer adds ROOT/classes.txt (as labelImg does) so label order survives.

Layouts read: `ROOT/SPLIT/*.xml` beside the images, or the VOC devkit layout
(`Annotations/`, `JPEGImages/`, `ImageSets/Main/SPLIT.txt`). Written: `ROOT/SPLIT/` images + XML.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from cvpipe.data.records import Dataset, Problem, Record, inside_root, malformed
from cvpipe.errors import DataError
from cvpipe.io.images import IMAGE_SUFFIXES, write_text


def _number(text: str | None) -> float | None:
    """A number from an element's text (`nan` too: `data check` reports it as a NaN box); None where it is missing or
    not a number (`12px`, `abc`)."""
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _xml_files(root: Path, split: str) -> list[Path]:
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if listing.exists():
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        return [inside_root(root, Path("Annotations") / f"{i}.xml", where=str(listing)) for i in ids]
    folder = inside_root(root, Path(split), where=f"split {split!r}")
    if not folder.is_dir():
        raise DataError(f"{folder}: no such split folder (and no {listing}); expected XML files beside the images")
    return sorted(folder.glob("*.xml"))


def _image_for(root: Path, xml: Path, filename: str | None) -> Path:
    candidates = []
    if filename:
        candidates += [xml.parent / filename, root / "JPEGImages" / filename]
    candidates += [xml.with_suffix(s) for s in sorted(IMAGE_SUFFIXES)]
    candidates += [root / "JPEGImages" / (xml.stem + s) for s in (".jpg", ".png")]
    for c in candidates:
        if c.exists():
            return inside_root(root, c.relative_to(root) if c.is_relative_to(root) else c, where=str(xml))
    # Not found: report the most likely name (same stem as the XML, as the file name says)
    stem = Path(filename).stem if filename else xml.stem
    return xml.parent / (stem + (Path(filename).suffix if filename else ".jpg"))


def read_voc(root: Path, split: str, classes: list[str]) -> Dataset:
    """Unknown class names get label -1 (reported by `data check`) unless `classes` is empty (then learnt)."""
    root = Path(root)
    if not classes and (root / "classes.txt").exists():  # written by write_voc: keeps label order
        classes = (root / "classes.txt").read_text().split()
    learn = not classes
    classes = list(classes)
    records, problems = [], []
    seen: dict[str, Path] = {}
    for image_id, xml in enumerate(_xml_files(root, split)):
        try:
            tree = ET.parse(xml).getroot()
        except (ET.ParseError, OSError) as e:
            problems.append(Problem("unreadable annotation", str(xml), f"malformed XML: {e}"))
            continue
        filename = tree.findtext("filename")
        path = _image_for(root, xml, filename)
        if path.name in seen:
            problems.append(Problem("duplicate id", str(xml), f"image {path.name} is also annotated by {seen[path.name]}"))
            continue
        seen[path.name] = xml
        size = [_number(tree.findtext(f"size/{tag}")) for tag in ("width", "height")]
        if tree.find("size") is not None and None in size:  # the image header gives the size instead
            problems.append(Problem("unreadable size", str(xml), f"<size> width/height {tree.findtext('size/width')!r}, "
                                    f"{tree.findtext('size/height')!r} are not numbers", fatal=False))
        width, height = (int(v) if v is not None and math.isfinite(v) and v > 0 else 0 for v in size)
        boxes, labels = [], []
        for k, obj in enumerate(tree.iter("object")):
            name = (obj.findtext("name") or "").strip()
            if name not in classes:
                if learn and name:
                    classes.append(name)
                else:
                    problems.append(Problem("unknown class", f"{xml} object {k}", f"class {name!r} is not in {classes}"))
            bb = obj.find("bndbox")
            texts = [bb.findtext(t) if bb is not None else None for t in ("xmin", "ymin", "xmax", "ymax")]
            coords = [_number(t) for t in texts]
            if None in coords:
                detail = "no <bndbox>" if bb is None else "<bndbox> xmin, ymin, xmax, ymax must be numbers, got " + \
                    ", ".join(repr(t) for t in texts)
                problems.append(malformed(f"{xml} object {k}", detail))
                continue
            boxes.append([coords[0] - 1, coords[1] - 1, coords[2], coords[3]])
            labels.append(classes.index(name) if name in classes else -1)
        rel = path.relative_to(xml.parent) if path.is_relative_to(xml.parent) else Path(path.name)
        records.append(Record(path=path, file_name=rel.as_posix(), image_id=image_id, width=width, height=height,
                              boxes=np.array(boxes, np.float32).reshape(-1, 4), labels=np.array(labels, np.int64)))
    return Dataset(root, split, classes, records, problems)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def write_voc(dataset: Dataset, out: Path, split: str) -> None:
    """One XML per image in OUT/SPLIT/, named after the image."""
    folder = Path(out) / split
    for r in dataset.records:
        ann = ET.Element("annotation")
        ET.SubElement(ann, "folder").text = split
        ET.SubElement(ann, "filename").text = r.file_name
        size = ET.SubElement(ann, "size")
        for tag, v in (("width", r.width), ("height", r.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(v)
        for box, label in zip(r.boxes, r.labels):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = dataset.classes[label]
            ET.SubElement(obj, "difficult").text = "0"
            bb = ET.SubElement(obj, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (float(box[0]) + 1, float(box[1]) + 1, float(box[2]), float(box[3]))):
                ET.SubElement(bb, tag).text = _fmt(v)
        ET.indent(ann)
        write_text(folder / Path(r.file_name).with_suffix(".xml"), ET.tostring(ann, encoding="unicode") + "\n")
    write_text(Path(out) / "classes.txt", "".join(f"{c}\n" for c in dataset.classes))
