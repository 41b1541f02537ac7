"""Label Studio's JSON tasks: pre-labels as importable tasks with `predictions`, and corrected annotations read back.

Written (`write_label_studio`): `tasks.json`, a list of tasks `{"data": {"image": URL, "file": NAME},
"predictions": [{"model_version", "score", "result": [...]}]}`, and `label_config.xml`, the labeling interface
whose tag names the results use (`label`: RectangleLabels, `polygon`: PolygonLabels, `choice`: Choices). Regions
are in percent of the image, as Label Studio stores them; each carries its model score.

Read (`read_label_studio`): Label Studio's "JSON" export (a list of tasks, each with its `annotations`), the last
annotation of a task that was not cancelled; with `predictions=True` a task nobody annotated keeps its prediction.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlparse
from xml.sax.saxutils import quoteattr

import numpy as np

from cvpipe.data.records import Dataset, Problem, Record, malformed
from cvpipe.errors import DataError
from cvpipe.io.images import image_size, write_text
from cvpipe.labeling.regions import ImageFinder, Labels, outline, polygon_box

LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local-files storage: paths under its document root
BOX, POLYGON, CHOICE = "label", "polygon", "choice"  # the labeling interface's tag names


def label_config(classes: list[str], *, polygons: bool, choices: bool) -> str:
    """The labeling interface (Label Studio's XML config) for these classes."""
    labels = "".join(f"    <Label value={quoteattr(name)}/>\n" for name in classes)
    parts = ['<View>\n  <Image name="image" value="$image" zoom="true"/>\n']
    if choices:
        options = "".join(f"    <Choice value={quoteattr(name)}/>\n" for name in classes)
        parts.append(f'  <Choices name="{CHOICE}" toName="image" choice="single" showInline="true">\n{options}'
                     "  </Choices>\n")
    else:
        parts.append(f'  <RectangleLabels name="{BOX}" toName="image">\n{labels}  </RectangleLabels>\n')
        if polygons:
            parts.append(f'  <PolygonLabels name="{POLYGON}" toName="image">\n{labels}  </PolygonLabels>\n')
    return "".join(parts) + "</View>\n"


def _results(record: Record, scores: np.ndarray, classes: list[str]) -> list[dict]:
    """One image's objects as Label Studio result regions (percent of the image)."""
    w, h = record.width, record.height
    common = {"to_name": "image", "original_width": w, "original_height": h, "image_rotation": 0}
    results = []
    if record.label is not None:
        score = float(scores[0]) if len(scores) else None
        return [{"id": "c0", "type": "choices", "from_name": CHOICE, "to_name": "image",
                 "value": {"choices": [classes[record.label]]}, **({"score": score} if score is not None else {})}]
    for k, (box, label) in enumerate(zip(record.boxes.tolist(), record.labels.tolist())):
        score = {"score": round(float(scores[k]), 5)} if k < len(scores) else {}
        points = outline(record.segmentations[k], h, w) if record.segmentations is not None else None
        if points is not None:  # an instance is its polygon (its box follows from it when read back)
            results.append({"id": f"p{k}", "type": "polygonlabels", "from_name": POLYGON, **common, **score,
                            "value": {"points": (100 * points / [w, h]).tolist(), "closed": True,
                                      "polygonlabels": [classes[label]]}})
            continue
        x1, y1, x2, y2 = box
        results.append({"id": f"b{k}", "type": "rectanglelabels", "from_name": BOX, **common, **score,
                        "value": {"x": 100 * x1 / w, "y": 100 * y1 / h, "width": 100 * (x2 - x1) / w,
                                  "height": 100 * (y2 - y1) / h, "rotation": 0, "rectanglelabels": [classes[label]]}})
    return results


def write_label_studio(labels: Labels, out: Path, image_url: str = LOCAL_FILES) -> list[str]:
    """tasks.json and label_config.xml under `out`; `image_url` + the image's path (URL-quoted) is what Label
    Studio loads. Returns the names written."""
    dataset = labels.dataset
    tasks = []
    for record in dataset.records:
        scores = labels.scores.get(record.file_name, np.zeros(0))
        prediction = {"model_version": labels.model_version, "result": _results(record, scores, dataset.classes)}
        if len(scores):  # the image's least certain object: Label Studio sorts tasks by it
            prediction["score"] = round(float(np.min(scores)), 5)
        tasks.append({"data": {"image": image_url + quote(record.file_name), "file": record.file_name},
                      "predictions": [prediction]})
    write_text(Path(out) / "tasks.json", json.dumps(tasks, indent=1))
    segmented = any(r.segmentations is not None for r in dataset.records)
    classified = any(r.label is not None for r in dataset.records)
    write_text(Path(out) / "label_config.xml", label_config(dataset.classes, polygons=segmented, choices=classified))
    return ["tasks.json", "label_config.xml"]


def _task_image(data: dict) -> str | None:
    """The image a task names: our `file`, else the path inside its image URL (local files `?d=`, uploads
    `/data/upload/N/HASH-NAME`, any other URL's last segment)."""
    if isinstance(data.get("file"), str):
        return data["file"]
    url = data.get("image")
    if not isinstance(url, str) or not url:
        return None
    parsed = urlparse(url)
    if "d" in parse_qs(parsed.query):
        return parse_qs(parsed.query)["d"][0]
    name = unquote(parsed.path.rsplit("/", 1)[-1])
    if parsed.path.startswith("/data/upload/") and "-" in name:
        name = name.split("-", 1)[1]  # Label Studio prefixes uploads with 8 hex digits
    return name


def _chosen_result(task: dict, predictions: bool) -> tuple[list | None, str]:
    """(the result regions to read, where they come from) or (None, why there are none)."""
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if annotations:
        return annotations[-1].get("result") or [], "annotation"
    found = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    if predictions and found:
        return found[-1].get("result") or [], "prediction"
    return None, "no annotation" + ("" if predictions else " (--predictions keeps the pre-labels of such tasks)")


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def read_label_studio(path: Path, images: Path, classes: list[str] | None, *, predictions: bool = False) -> Dataset:
    """Label Studio's JSON export → a Dataset of the images under `images` (problems: tasks left out, and why).
    `classes` None: the label names the file uses, in the order they first appear."""
    path = Path(path)
    learn, classes = classes is None, list(classes or [])
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not Label Studio JSON ({e}); export the project as JSON") from None
    except RecursionError:
        raise DataError(f"{path}: not Label Studio JSON (nested too deeply to read)") from None
    if isinstance(tasks, dict) and "data" in tasks:
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DataError(f"{path}: not Label Studio JSON (expected a list of tasks); export the project as JSON")
    finder = ImageFinder(images)
    problems: list[Problem] = []
    unknown: Counter[str] = Counter()
    records = []
    for t, task in enumerate(tasks):
        where = f"{path} task {task.get('id', t) if isinstance(task, dict) else t}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            problems.append(malformed(where, "a task is a mapping with a 'data' mapping"))
            continue
        name = _task_image(task["data"])
        if name is None:
            problems.append(malformed(where, "its data names no image ('image' or 'file')"))
            continue
        found = finder.find(name, where)
        if isinstance(found, Problem):
            problems.append(found)
            continue
        image, file_name = found
        result, source = _chosen_result(task, predictions)
        if result is None:
            problems.append(Problem("not labeled", f"{where} ({name})", source, fatal=False, skipped=True))
            continue
        records.append(_record(result, image, file_name, len(records) + 1, classes, where, problems, unknown, learn))
    problems += [Problem("unknown label", f"{path}", f"{name!r} ({count}×) is not one of the classes {classes}; "
                         "those regions are left out (is this another project's export?)", skipped=True)
                 for name, count in unknown.items()]
    return Dataset(finder.root, ".", classes, records, problems)


def _record(result: list, image: Path, file_name: str, image_id: int, classes: list[str], where: str,
            problems: list[Problem], unknown: Counter, learn: bool) -> Record:
    """One task's regions as a record: boxes from rectangles, boxes and polygons from polygons, a class from
    choices. Regions that are not those, or not numbers, are reported and left out."""
    boxes, labels, segmentations, label = [], [], [], None
    width = height = 0
    for k, region in enumerate(result if isinstance(result, list) else []):
        here = f"{where} region {region.get('id', k) if isinstance(region, dict) else k}"
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            problems.append(malformed(here, "a region is a mapping with a 'value' mapping"))
            continue
        kind, value = region.get("type"), region["value"]
        names = value.get(kind) if isinstance(kind, str) else None
        if kind not in ("rectanglelabels", "polygonlabels", "choices"):
            problems.append(malformed(here, f"{kind!r} regions are not read (rectangles, polygons and choices are)"))
            continue
        if not (isinstance(names, list) and len(names) == 1 and isinstance(names[0], str)):
            problems.append(malformed(here, f"expected one name in value.{kind}, got {json.dumps(names)[:60]}"))
            continue
        if names[0] not in classes and learn:
            classes.append(names[0])
        elif names[0] not in classes:
            unknown[names[0]] += 1
            continue
        if kind == "choices":
            label = classes.index(names[0])
            continue
        width = _number(region.get("original_width")) or width
        height = _number(region.get("original_height")) or height
        if not (width and height):
            width, height = image_size(image)
        if kind == "rectanglelabels":
            x, y, w, h = (_number(value.get(key)) for key in ("x", "y", "width", "height"))
            if None in (x, y, w, h):
                problems.append(malformed(here, "x, y, width and height must be numbers (percent of the image)"))
                continue
            if _number(value.get("rotation")):
                problems.append(malformed(here, f"a box rotated by {value['rotation']}°; boxes here are upright: "
                                                "straighten it in Label Studio"))
                continue
            boxes.append([x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100])
            segmentations.append(None)
        else:
            points = value.get("points")
            try:
                xy = np.asarray(points, np.float64).reshape(-1, 2) * [width / 100, height / 100]
            except (TypeError, ValueError):
                xy = np.zeros((0, 2))
            if len(xy) < 3 or not np.isfinite(xy).all():
                problems.append(malformed(here, "a polygon is at least 3 [x, y] points (percent of the image)"))
                continue
            boxes.append(polygon_box(xy))
            segmentations.append([xy.ravel().round(2).tolist()])
        labels.append(classes.index(names[0]))
    record = Record(path=image, file_name=file_name, image_id=image_id, width=int(width), height=int(height),
                    boxes=np.array(boxes, np.float32).reshape(-1, 4), labels=np.array(labels, np.int64), label=label)
    if segmentations and all(s is not None for s in segmentations):
        record.segmentations = segmentations
    if not (width and height):
        record.width, record.height = image_size(image)
    return record
