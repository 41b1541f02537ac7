"""Sliced inference for large images (`tiling:`, ops/slicing.py): slices cover the image, batches stay within
`tiling.batch`, objects straddling seams are found exactly once by every merge, and `predict` slices a large
image by default with the head's input size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from cvpipe.config import TilingConfig
from cvpipe.data.records import PlacedMask
from cvpipe.engine.runtime import inference_model
from cvpipe.errors import ConfigError
from cvpipe.io.images import read_image, write_image
from cvpipe.loading import load_pipeline
from cvpipe.ops.detections import Detections
from cvpipe.ops.inference import detect
from cvpipe.ops.slicing import (
    _seam_matches,
    detect_sliced,
    instances_sliced,
    merge,
    slice_origins,
    slices_needed,
)
from cvpipe.pipeline import Pipeline

from .conftest import REPO, shapes_pipeline_file
from .test_engine import PIPELINE as FASTER_RCNN


def test_slices_cover_the_image_with_the_last_row_and_column_flush():
    origins = slice_origins(1000, 700, 400, 0.2)  # steps of 320
    assert sorted({x for x, _ in origins}) == [0, 300] and sorted({y for _, y in origins}) == [0, 320, 600]
    assert len(origins) == 6
    assert slice_origins(300, 300, 400, 0.2) == [(0, 0)]


class OracleDetector:
    """Sees the true objects: in each slice, the part of every object inside it (boxes cut by the slice edge are
    what a detector finds there), with the object's own score. Counts the slices per call."""

    def __init__(self, objects: np.ndarray, scores: np.ndarray, origins_of):
        self.objects, self.scores, self.origins_of, self.calls = objects, scores, origins_of, []

    def __call__(self, crops: list[torch.Tensor]) -> list[Detections]:
        self.calls.append(len(crops))
        out = []
        for crop in crops:
            x, y = self.origins_of(crop)
            h, w = crop.shape[-2:]
            shifted = self.objects - np.array([x, y, x, y], np.float32)
            clipped = np.stack([shifted[:, 0].clip(0, w), shifted[:, 1].clip(0, h), shifted[:, 2].clip(0, w),
                                shifted[:, 3].clip(0, h)], 1)
            area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
            seen = area >= 16  # a sliver of an object is not found
            out.append(Detections(clipped[seen], self.scores[seen], np.zeros(int(seen.sum()), np.int64)))
        return out


def _scene():
    """A 1000×700 image, slices of 400 (overlap 0.2: seams at x 300–400, y 320–400, 600–720); 20-px objects
    laid on a grid so that many straddle a seam or sit in a corner where four slices overlap."""
    objects = np.array([[x, y, x + 20, y + 20] for x in range(5, 680, 37) for y in range(5, 980, 41)], np.float32)
    scores = np.linspace(0.99, 0.5, len(objects)).astype(np.float32)
    image = torch.zeros(3, 1000, 700, dtype=torch.uint8)
    # each crop is a view of the image: its storage offset gives its origin
    def origins_of(crop):
        offset = crop.storage_offset()
        return offset % 700, offset // 700
    return image, objects, scores, origins_of


@pytest.mark.parametrize("merge_by", [("nms", "ios"), ("nmm", "ios")])
def test_every_object_across_seams_is_found_exactly_once(merge_by):
    image, objects, scores, origins_of = _scene()
    detector = OracleDetector(objects, scores, origins_of)
    tiling = TilingConfig(size=400, overlap=0.2, batch=4, merge=merge_by[0], match=merge_by[1], iou=0.5)
    found = detect_sliced(detector, image, 400, tiling)
    assert detector.calls == [4, 2]  # 6 slices, at most 4 a pass
    assert len(found) == len(objects)
    ious = _iou(found.boxes, objects)
    best = ious.argmax(1)
    assert sorted(best.tolist()) == list(range(len(objects)))  # one box per object, each object once
    if merge_by[0] != "nms":  # merging restores the whole box from its cut parts
        assert ious.max(1).min() > 0.99


@pytest.mark.parametrize("match", ["ios", "iou"])
def test_seam_matching_finds_every_pair_a_comparison_of_all_boxes_finds(match):
    """Seam matching compares only the boxes reaching into a neighbouring slice's; on random boxes (two classes,
    some hanging over their slice's edge) it pairs exactly what comparing every box with every other would."""
    rng = np.random.default_rng(0)
    size, tiling = 100, TilingConfig(merge="nms", match=match, iou=0.3)
    origins = slice_origins(260, 260, size, 0.25)
    found = []
    for x, y in origins:
        corner = rng.uniform(-10, size - 5, (40, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(4, 40, (40, 2))], 1) + [x, y, x, y]
        found.append(Detections(boxes.astype(np.float32), rng.uniform(0.1, 1, 40).astype(np.float32),
                                rng.integers(0, 2, 40)))
    matches = _seam_matches(found, origins, size, tiling)
    joined = Detections.joined(found)
    slice_of = np.repeat(np.arange(len(found)), [len(d) for d in found])
    a, b = joined.boxes[:, None], joined.boxes[None]
    inter = (np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2])).clip(0).prod(-1)
    area = (joined.boxes[:, 2:] - joined.boxes[:, :2]).prod(1)
    smaller = np.minimum(area[:, None], area[None])
    overlap = inter / smaller if match == "ios" else inter / (area[:, None] + area[None] - inter)
    near = np.abs(np.array(origins)[:, None] - np.array(origins)[None]).max(-1) < size
    expected = ((overlap >= tiling.iou) & (joined.labels[:, None] == joined.labels[None])
                & near[slice_of][:, slice_of] & (slice_of[:, None] != slice_of[None]))
    assert expected.sum() > 50  # the scene has seam matches to find
    assert [sorted(m.tolist()) for m in matches] == [np.flatnonzero(row).tolist() for row in expected]


def test_nms_by_iou_keeps_a_seam_cut_part_beside_the_whole_object():
    """Why IoS is the default: a box cut to 40 % at a seam overlaps the whole object by IoU 0.4."""
    whole = Detections(np.array([[300.0, 10, 350, 60]], np.float32), np.array([0.9], np.float32), np.array([0]))
    part = Detections(np.array([[300.0, 10, 320, 60]], np.float32), np.array([0.6], np.float32), np.array([0]))
    for match, expected in (("iou", 2), ("ios", 1)):
        tiling = TilingConfig(merge="nms", match=match, iou=0.5)
        assert len(merge([whole, part], [(0, 0), (300, 0)], 400, tiling, (400, 800))) == expected


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_auto_slices_only_what_is_much_larger_than_the_head_sees(tmp_path):
    config = load_pipeline(shapes_pipeline_file(tmp_path, FASTER_RCNN))  # faster_rcnn min_size 96
    assert config.tiling.merge == "nms"  # detection's default merge
    assert slices_needed(config, 300, 380) is None  # ≤ 4 × 96
    assert slices_needed(config, 300, 400) == 96
    config.tiling.mode = "never"
    assert slices_needed(config, 3000, 4000) is None
    config.tiling.mode, config.tiling.size = "always", 128
    assert slices_needed(config, 100, 120) is None and slices_needed(config, 100, 200) == 128


def test_tiling_is_refused_where_the_task_has_no_slices(tmp_path):
    from .test_classify import colours_pipeline

    with pytest.raises(ConfigError, match="slicing large images is for detection, instance segmentation and segmentation pipelines"):
        load_pipeline(colours_pipeline(tmp_path), ["tiling.mode=always"])


@pytest.mark.assets
def test_predict_slices_a_mosaic_of_photos_into_the_photos_own_detections(tmp_path, photos, monkeypatch):
    """Nine real photos at the SSD's 300 px, laid 3 × 3: slices of 300 with no overlap are exactly the photos, so
    the sliced predict must give each photo's own detections, shifted to its cell; seen whole (900 px shrunk to
    300) the same model finds fewer."""
    import cv2

    monkeypatch.chdir(REPO)
    names = sorted(photos.glob("*.[jp][pn]g"))[:9]
    cells = [cv2.resize(read_image(p), (300, 300), interpolation=cv2.INTER_AREA) for p in names]
    cells += [np.zeros((300, 300, 3), np.uint8)] * (9 - len(cells))
    mosaic = np.concatenate([np.concatenate(cells[r * 3:r * 3 + 3], 1) for r in range(3)], 0)
    write_image(tmp_path / "big" / "mosaic.png", mosaic)
    tiling = ["tiling.mode=always", "tiling.size=300", "tiling.overlap=0", "tiling.batch=4"]
    pipeline = Pipeline.from_yaml("pipelines/coco_ssd_mobilenet_v2.yaml", [f"output.dir={tmp_path}", *tiling])
    pipeline.predict(tmp_path / "big", tmp_path / "sliced", conf=0.3)
    sliced = json.loads((tmp_path / "sliced" / "results.json").read_text())
    model = inference_model(pipeline.config, None, torch.device("cpu"), "pytorch").model
    expected = []
    for k, cell in enumerate(cells):
        det = detect(model, [torch.from_numpy(cell).permute(2, 0, 1)], torch.device("cpu"))[0]
        keep = det["scores"] >= 0.3
        x, y = (k % 3) * 300, (k // 3) * 300
        for box, label in zip(det["boxes"][keep].tolist(), det["labels"][keep].tolist()):
            expected.append((label + 1, box[0] + x, box[1] + y, box[2] + x, box[3] + y))
    got = [(r["category_id"], r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3])
           for r in sliced]
    assert len(expected) >= 9 and len(got) == len(expected)
    for label, *box in expected:  # results.json keeps boxes to 0.01 px
        assert any(g[0] == label and np.abs(np.subtract(g[1:], box)).max() < 0.02 for g in got), (label, box)
    pipeline.config.tiling.mode = "never"
    pipeline.predict(tmp_path / "big", tmp_path / "whole", conf=0.3)
    assert len(json.loads((tmp_path / "whole" / "results.json").read_text())) < len(expected)


def test_a_scene_of_more_than_100_objects_is_scored_on_all_of_them():
    """COCO's maxDets 100 would cap recall at 100/150 here; both evaluators agree on the raised cap."""
    import copy

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from cvpipe.metrics.coco import evaluate_coco

    boxes = [[x * 30.0, y * 30.0, 20.0, 20.0] for x in range(15) for y in range(10)]
    gt = {"images": [{"id": 1, "width": 450, "height": 300}], "categories": [{"id": 1, "name": "tree"}],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 400.0, "iscrowd": 0}
                          for k, b in enumerate(boxes)]}
    results = [{"image_id": 1, "category_id": 1, "bbox": b, "score": 1 - k / 1000} for k, b in enumerate(boxes)]
    for evaluator in ("faster", "pycocotools"):
        metrics = evaluate_coco(copy.deepcopy(gt), copy.deepcopy(results), ["tree"], evaluator=evaluator)
        assert metrics.stats["AP50"] == pytest.approx(1.0) and metrics.max_detections == 150
        assert metrics.stats["AP"] == pytest.approx(1.0)  # pycocotools' own first stat would be -1 here
        first = next(line for line in metrics.summary.splitlines() if line.startswith(" Average Precision"))
        assert first.endswith("maxDets=150 ] = 1.000"), first
        assert metrics.as_json()["max_detections"] == 150
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    capped = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
    capped.evaluate(), capped.accumulate(), capped.summarize()
    assert capped.stats[1] < 0.7  # what [1, 10, 100] reports for the same results


def test_training_draws_windows_of_large_images_with_their_boxes(tmp_path):
    from cvpipe.data.augment import build_augment
    from cvpipe.data.records import Dataset, Record
    from cvpipe.data.samples import WindowedDetectionSamples
    from cvpipe.tasks import get_task

    config = load_pipeline(shapes_pipeline_file(tmp_path, FASTER_RCNN), ["tiling.empty_share=0", "augment.train=[]"])
    boxes = np.array([[x, y, x + 20, y + 20] for x in range(10, 580, 60) for y in range(10, 380, 60)], np.float32)
    write_image(tmp_path / "big.png", np.full((400, 600, 3), 50, np.uint8))
    big = Record(path=tmp_path / "big.png", file_name="big.png", image_id=0, width=600, height=400, boxes=boxes,
                 labels=np.zeros(len(boxes), np.int64))
    write_image(tmp_path / "small.png", np.full((90, 90, 3), 50, np.uint8))
    small = Record(path=tmp_path / "small.png", file_name="small.png", image_id=1, width=90, height=90)
    dataset = Dataset(tmp_path, "train", ["square", "disc"], [big, small])

    def samples(seed):
        return get_task("detect").samples(config, dataset, build_augment(config.augment, "train", seed=seed), train=True)

    windows = samples(0)
    assert isinstance(windows, WindowedDetectionSamples)
    assert len(windows) == round(600 * 400 / 96**2) + 1  # the slices' worth of the big image; the small one whole
    drawn = [windows[i] for i in range(len(windows) - 1)]
    for image, target in drawn:
        assert image.shape == (3, 96, 96) and len(target["boxes"])  # empty_share 0: every window holds objects
        b = target["boxes"]
        assert (b >= 0).all() and (b <= 96).all()
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        assert (area >= 0.4 * 400 - 1e-3).all()  # min_visible 0.4 of a 20 × 20 box
    assert windows[len(windows) - 1][0].shape == (3, 90, 90)
    again = samples(0)
    assert all(torch.equal(a[1]["boxes"], again[i][1]["boxes"]) for i, a in enumerate(drawn))  # a resumed run replays
    other = samples(1)
    assert not all(torch.equal(a[1]["boxes"], other[i][1]["boxes"]) for i, a in enumerate(drawn))
    plain = build_augment(config.augment, "eval")
    assert type(get_task("detect").samples(config, dataset, plain, train=False)).__name__ == "DetectionSamples"
    # tiling.window: training windows of their own side, slices unchanged (objects smaller at inference)
    narrow = load_pipeline(shapes_pipeline_file(tmp_path, FASTER_RCNN),
                           ["tiling.empty_share=0", "augment.train=[]", "tiling.window=64"])
    windows = get_task("detect").samples(narrow, dataset, build_augment(narrow.augment, "train", seed=0), train=True)
    assert len(windows) == round(600 * 400 / 64**2) + 1
    assert all(windows[i][0].shape == (3, 64, 64) for i in range(len(windows) - 1))


def _geotiff(path, image, *, scale=(0.5, 0.5), tiepoint=(0, 0, 0, 500000.0, 4978000.0, 0), epsg=32612):
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, epsg]  # header, model type projected, ProjectedCSTypeGeoKey
    tifffile.imwrite(path, image, photometric="rgb", extratags=[
        (33550, "d", 3, (*scale, 0.0), False), (33922, "d", 6, tiepoint, False), (34735, "H", len(keys), keys, False)])


def test_a_geotiff_georeference_maps_boxes_to_map_coordinates(tmp_path):
    from cvpipe.io.geo import read_georeference

    _geotiff(tmp_path / "scene.tif", np.zeros((40, 60, 3), np.uint8))
    geo = read_georeference(tmp_path / "scene.tif")
    assert geo.epsg == 32612 and geo.affine == (0.5, 0.0, 500000.0, 0.0, -0.5, 4978000.0)
    ring = geo.polygon([10, 20, 30, 40])  # 0.5 m pixels, north up from the top-left tie point
    assert ring == [[500005.0, 4977990.0], [500015.0, 4977990.0], [500015.0, 4977980.0], [500005.0, 4977980.0],
                    [500005.0, 4977990.0]]
    write_image(tmp_path / "plain.png", np.zeros((8, 8, 3), np.uint8))
    assert read_georeference(tmp_path / "plain.png") is None
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb")
    assert read_georeference(tmp_path / "plain.tif") is None


def test_predict_on_a_geotiff_writes_geojson_in_its_coordinate_system(tmp_path):
    pipeline = Pipeline.from_yaml(shapes_pipeline_file(tmp_path, FASTER_RCNN), ["model.head.score_thresh=0.0"])
    weights = pipeline.fit(tensorboard=False).last
    scene = read_image(sorted((tmp_path / "src" / "val").glob("*.png"))[0])
    _geotiff(tmp_path / "geo" / "scene.tif", scene, tiepoint=(0, 0, 0, 1000.0, 2000.0, 0), scale=(2.0, 2.0))
    report = pipeline.predict(tmp_path / "geo", tmp_path / "pred", weights=weights, conf=0.0)
    assert report.counted > 0 and "detections.geojson (map coordinates)" in report.written
    collection = json.loads((tmp_path / "pred" / "detections.geojson").read_text())
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32612"
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    assert len(collection["features"]) == len(results)
    x, y, w, h = results[0]["bbox"]
    ring = collection["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == pytest.approx([1000.0 + 2 * x, 2000.0 - 2 * y], abs=0.05)
    assert ring[2] == pytest.approx([1000.0 + 2 * (x + w), 2000.0 - 2 * (y + h)], abs=0.05)


def test_a_sliced_label_mask_takes_every_pixel_once_from_the_right_place():
    from cvpipe.ops.slicing import owned_spans, segment_sliced

    assert owned_spans([0, 300, 600], 400, 1000) == [(0, 350), (350, 650), (650, 1000)]
    h, w = 530, 470
    yy, xx = np.mgrid[0:h, 0:w]
    pattern = torch.from_numpy(((xx // 7 + yy // 5) % 3).astype(np.uint8))
    image = pattern[None].repeat(3, 1, 1)
    calls = []

    def segmenter(crops):  # labels each pixel by what it shows: stitching must put it back where it was
        calls.append(len(crops))
        return [crop[0].clone() for crop in crops]

    labels = segment_sliced(segmenter, image, 128, TilingConfig(size=128, overlap=0.25, batch=5))
    assert torch.equal(labels, pattern)
    assert max(calls) == 5 and sum(calls) == len(slice_origins(h, w, 128, 0.25))


def test_fcn_predicts_and_evaluates_large_images_in_slices(tmp_path):
    from .test_fcn import fcn_pipeline

    path = fcn_pipeline(tmp_path)
    with pytest.raises(ConfigError, match="tiling.size: head 'fcn' has no input size"):
        load_pipeline(path, ["tiling.mode=always"])
    pipeline = Pipeline.from_yaml(path, ["tiling.mode=always", "tiling.size=64"])
    result = pipeline.fit(tensorboard=False)  # the val images (112 × 96) are larger than a slice: scored sliced
    assert 0 <= result.metrics.stats["mIoU"] <= 1
    tiles = [read_image(p) for p in sorted((tmp_path / "src" / "val").glob("*.png"))]
    write_image(tmp_path / "big" / "big.png", np.concatenate([np.concatenate(tiles, 1)] * 2, 0))
    pipeline.predict(tmp_path / "big", tmp_path / "pred", weights=result.last)
    import cv2

    labels = cv2.imread(str(tmp_path / "pred" / "masks" / "big.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (192, 448) and labels.max() < 3


def test_segmentation_trains_on_windows_whose_mask_matches_their_pixels(tmp_path):
    from cvpipe.data.augment import build_augment
    from cvpipe.data.samples import WindowedSegmentationSamples
    from cvpipe.engine.data import load_split
    from cvpipe.tasks import get_task

    from .test_fcn import fcn_pipeline

    root = tmp_path / "sem"
    yy, xx = np.mgrid[0:200, 0:300]
    pixels = ((xx // 9 + yy // 4) % 200).astype(np.uint8)
    write_image(root / "train" / "images" / "a.png", np.repeat(pixels[..., None], 3, 2))
    write_image(root / "train" / "masks" / "a.png", (pixels % 2).astype(np.uint8))  # the label follows the pixel
    config = load_pipeline(fcn_pipeline(tmp_path), ["tiling.mode=always", "tiling.size=64", "tiling.empty_share=0",
                                                   f"data.root={root}", "data.format=masks", "augment.train=[]"])
    dataset, _ = load_split(config, "train", config.data.classes)
    windows = get_task("segment").samples(config, dataset, build_augment(config.augment, "train", seed=0), train=True)
    assert isinstance(windows, WindowedSegmentationSamples) and len(windows) == round(300 * 200 / 64**2)
    for image, target in (windows[i] for i in range(len(windows))):
        assert image.shape == (3, 64, 64) and torch.equal(target["mask"], (image[0] % 2).long())


class OracleSegmenter:
    """Sees the true discs (radius 10, centres on _scene's grid): in each slice, the part of each disc inside it as a
    mask (PlacedMask in the slice's pixels) with its tight box; a part under 16 px is not found."""

    def __init__(self, centres: np.ndarray, scores: np.ndarray, origins_of, radius: float = 10.0):
        self.centres, self.scores, self.origins_of, self.radius = centres, scores, origins_of, radius

    def disc(self, k: int, x0: int, y0: int, x1: int, y1: int) -> PlacedMask:
        """Disc k inside the image region [x0, x1) × [y0, y1), placed in image pixels."""
        cx, cy = self.centres[k]
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        return PlacedMask.of(((xx - cx) ** 2 + (yy - cy) ** 2 <= self.radius**2).astype(np.uint8), x0, y0)

    def __call__(self, crops: list[torch.Tensor]) -> list[Detections]:
        out = []
        for crop in crops:
            x, y = self.origins_of(crop)
            h, w = crop.shape[-2:]
            boxes, scores, masks = [], [], []
            for k, (cx, cy) in enumerate(self.centres):
                x0, y0 = max(x, int(cx - self.radius)), max(y, int(cy - self.radius))
                x1, y1 = min(x + w, int(cx + self.radius) + 1), min(y + h, int(cy + self.radius) + 1)
                if x1 <= x0 or y1 <= y0:
                    continue
                part = self.disc(k, x0, y0, x1, y1)
                if part.area < 16:
                    continue
                local = PlacedMask(part.x - x, part.y - y, part.crop)
                boxes.append([local.x, local.y, local.x + local.crop.shape[1], local.y + local.crop.shape[0]])
                scores.append(self.scores[k])
                masks.append(local)
            out.append(Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                                  np.zeros(len(scores), np.int64), masks))
        return out


def _mask_iou(a: PlacedMask, b: PlacedMask) -> float:
    both = PlacedMask.union([a, b])
    canvas = np.zeros((2, *both.crop.shape), np.uint8)
    for layer, m in zip(canvas, (a, b)):
        layer[m.y - both.y:m.y - both.y + m.crop.shape[0], m.x - both.x:m.x - both.x + m.crop.shape[1]] = m.crop
    return float((canvas[0] & canvas[1]).sum() / both.area)


@pytest.mark.parametrize("merge_by", ["nms", "nmm"])
def test_every_instance_across_seams_is_found_once_and_nmm_rejoins_its_mask(merge_by):
    image, objects, scores, origins_of = _scene()
    centres = (objects[:, :2] + objects[:, 2:]) / 2
    segmenter = OracleSegmenter(centres, scores, origins_of)
    tiling = TilingConfig(size=400, overlap=0.2, batch=4, merge=merge_by, match="ios", iou=0.5)
    found = instances_sliced(segmenter, image, 400, tiling)
    assert len(found.masks) == len(found.boxes) == len(objects)
    truth = [segmenter.disc(k, 0, 0, 700, 1000) for k in range(len(centres))]
    best = _iou(found.boxes, objects).argmax(1)
    assert sorted(best.tolist()) == list(range(len(objects)))
    ious = np.array([_mask_iou(mask, truth[k]) for mask, k in zip(found.masks, best)])
    assert ious.min() > 0.5  # NMS: the best slice's mask, cut or not
    if merge_by == "nmm":  # the union of the pieces: the whole disc (each seam piece ≥ 16 px was seen)
        assert ious.min() > 0.97
        cut = sum(_mask_iou(mask, truth[k]) < 1 for mask, k in zip(found.masks, best))
        assert cut <= 2, cut  # only discs whose sliver fell under 16 px in every slice that cut them
    else:
        assert (ious < 1).any()  # some seam-cut disc keeps its best slice's (partial) mask


def test_placed_masks_encode_to_the_rle_pycocotools_gives_the_whole_mask():
    from cvpipe.data.records import encode_masks, union_area

    rng = np.random.default_rng(0)
    for trial in range(200):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        y0, x0 = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        crop = (rng.random((h, w)) < (trial % 4) / 3).astype(np.uint8)  # every fourth empty, some full
        whole = np.zeros((1, height, width), np.uint8)
        whole[0, y0:y0 + h, x0:x0 + w] = crop
        placed = PlacedMask.of(crop, x0, y0)
        assert placed.rle(height, width) == PlacedMask(x0, y0, crop).rle(height, width) == encode_masks(whole)[0]
        assert placed.area == int(whole.sum())
    rles = [PlacedMask.of((rng.random((12, 15)) < 0.5).astype(np.uint8), int(x), int(y)).rle(30, 40)
            for x, y in rng.integers(0, 18, (5, 2))]
    masks = [mask_utils.decode({**r, "counts": r["counts"].encode()}) for r in rles]
    assert union_area(rles) == int(np.any(masks, 0).sum()) and union_area([]) == 0
