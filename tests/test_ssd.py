"""SSD: default boxes on hand-computed cases, the loss, and the COCO port against OpenCV DNN on real photos."""

import math

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from cvpipe.config import NeckConfig
from cvpipe.io.images import read_image
from cvpipe.loading import load_pipeline
from cvpipe.models.heads import build_model
from cvpipe.models.heads.ssd import DefaultBoxes, SSDHead, default_box_shapes
from cvpipe.models.tf_ssd import COCO_IDS, opencv_reference_files
from cvpipe.ops.inference import detect, resize_uint8, to_device
from cvpipe.pipeline import Pipeline

from .conftest import REPO, shapes_pipeline_file, train_on_one_batch

PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png", "china.jpg", "grace_hopper.jpg"]


def test_n_plus_m_minus_1_boxes_per_location_in_tf_order():
    cfg = SSDHead(name="ssd", min_scale=0.2, max_scale=0.95, aspect_ratios=[1.0, 2.0, 0.5, 3.0, 0.3333])
    shapes = default_box_shapes(cfg, 6)
    assert [len(s) for s in shapes] == [6] * 6  # n = 2 sizes, m = 5 ratios → 2 + 5 − 1
    s0, s1 = 0.2, 0.35  # 0.2 + 0.75 / 5
    assert shapes[0][:3] == [(s0, 1.0), (s0, 2.0), (s0, 0.5)]
    assert shapes[0][5] == (pytest.approx(math.sqrt(s0 * s1)), 1.0)
    assert shapes[5][5] == (pytest.approx(math.sqrt(0.95 * 1.0)), 1.0)  # the last level interpolates towards 1
    reduced = default_box_shapes(cfg.model_copy(update={"reduce_first_level": True}), 6)
    assert reduced[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
    explicit = default_box_shapes(cfg.model_copy(update={"sizes": [[0.1, 0.2, 0.3]] * 6, "aspect_ratios": [1, 2]}), 6)
    assert explicit[0] == [(0.1, 1), (0.1, 2), (0.2, 1), (0.3, 1)]  # n = 3, m = 2 → 4


def test_default_boxes_hand_computed():
    """A 2×2 grid on a 100×200 (h×w) image, one size-0.5 box of ratio 1 and one of ratio 4."""
    boxes = DefaultBoxes([[(0.5, 1.0), (0.5, 4.0)]]).grid([(2, 2)], (100, 200))
    assert boxes.shape == (8, 4)
    # cell (0, 0): centre (50, 25); ratio 1 → 0.5·200 wide, 0.5·100 high; ratio 4 → w·2, h/2
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 100.0, 50.0]))
    torch.testing.assert_close(boxes[1], torch.tensor([-50.0, 12.5, 150.0, 37.5]))
    torch.testing.assert_close(boxes[2], torch.tensor([100.0, 0.0, 200.0, 50.0]))  # cell (0, 1): x first
    torch.testing.assert_close(boxes[4], torch.tensor([0.0, 50.0, 100.0, 100.0]))  # cell (1, 0)


def test_1917_default_boxes_for_tf_ssd_mobilenet_v2():
    cfg = load_pipeline(REPO / "pipelines/coco_ssd_mobilenet_v2.yaml").model.head
    boxes = DefaultBoxes(default_box_shapes(cfg, 6)).grid([(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)],
                                                          (300, 300))
    assert len(boxes) == 19 * 19 * 3 + (100 + 25 + 9 + 4 + 1) * 6 == 1917
    # OpenCV's text graph for the model lists the first level's box heights: 30, 42.43, 84.85 px
    heights = (boxes[:3, 3] - boxes[:3, 1]).tolist()
    assert heights == pytest.approx([30.0, 42.4264068604, 84.8528137207], abs=1e-3)


SSD_PIPELINE = """
name: shapes_ssd
task: detect
data: {{format: coco, root: {root}, train: train, val: val, classes: [square, disc]}}
augment: {{train: [{{HorizontalFlip: {{p: 0.5}}}}]}}
model:
  backbone: {{name: mobilenetv2_050, out_indices: [3, 4]}}
  neck: {{name: ssd, extra_blocks: [64, 64], depthwise: true}}
  head: {{name: ssd, size: 128, {extra}}}
train: {{epochs: 2, batch_size: 2, lr: 0.01, warmup_iters: 2, workers: 0}}
eval: {{batch_size: 2}}
output: {{dir: {out}}}
"""


def _tiny_ssd(tmp_path, extra=""):
    return shapes_pipeline_file(tmp_path, SSD_PIPELINE, "ssd.yaml", extra=extra)


def test_ssd_trains_evaluates_and_predicts_through_the_engine(tmp_path):
    pipeline = Pipeline.from_yaml(_tiny_ssd(tmp_path, "score: sigmoid"))
    result = pipeline.fit(tensorboard=False)
    assert (result.run_dir / "best.pt").is_file()
    metrics = pipeline.evaluate()
    assert 0.0 <= metrics.stats["AP50"] <= 1.0
    report = pipeline.predict(tmp_path / "src" / "val", tmp_path / "pred", conf=0.0)
    assert report.processed == 4 and (tmp_path / "pred" / "results.json").is_file()


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_loss_falls_on_one_batch(tmp_path, score):
    torch.manual_seed(0)
    config = load_pipeline(_tiny_ssd(tmp_path, f"score: {score}, depthwise: true"))
    model = build_model(config, 3, pretrained=False).train()
    images = [torch.rand(3, 96, 128) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[40.0, 20.0, 120.0, 90.0], [0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([0, 2])}]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses, loss_dict = train_on_one_batch(model, images, targets, optimizer, 30)
    assert set(loss_dict) == {"loss_box_reg", "loss_classifier"}
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert out[0]["boxes"].shape[1] == 4 and out[0]["labels"].max() < 3


def test_hard_negative_mining_keeps_three_negatives_per_positive(tmp_path):
    config = load_pipeline(_tiny_ssd(tmp_path))
    ssd = build_model(config, 3, pretrained=False).model
    n = 20
    anchors = [torch.tensor([[0.0, 0.0, 10.0, 10.0]] * n)]
    logits = torch.zeros(1, n, 4)
    logits[0, :, 1] = torch.arange(n, dtype=torch.float)  # negatives' class-1 logit grows: later ones are harder
    head = {"bbox_regression": torch.zeros(1, n, 4), "cls_logits": logits}
    target = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([2])}]
    matched = [torch.tensor([0] + [-1] * (n - 1))]
    loss = ssd.compute_loss(target, head, anchors, matched)["loss_classifier"]
    ce = torch.nn.functional.cross_entropy(logits[0], torch.tensor([2] + [0] * (n - 1)), reduction="none")
    expected = ce[0] + ce[-3:].sum()  # the positive and the three hardest negatives, over one positive
    torch.testing.assert_close(loss, expected)


def test_ssd_needs_the_ssd_neck(tmp_path):
    from cvpipe.errors import ConfigError

    config = load_pipeline(_tiny_ssd(tmp_path))
    bad = config.model.model_copy(update={"neck": NeckConfig(name="fpn", out_channels=32)})
    with pytest.raises(ConfigError, match="needs neck ssd"):
        build_model(config.model_copy(update={"model": bad}), 3, pretrained=False)


@pytest.fixture(scope="module")
def opencv_ssd():
    graph, text = opencv_reference_files(REPO / "weights")
    return cv2.dnn.readNetFromTensorflow(str(graph), str(text), cv2.dnn.ENGINE_CLASSIC)


@pytest.mark.assets
@pytest.mark.parametrize("photo", PHOTOS)
def test_coco_ssd_port_equals_opencv_dnn_on_the_original_graph(photo, photos, opencv_ssd, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_pipeline("pipelines/coco_ssd_mobilenet_v2.yaml")
    model = build_model(config, 80).eval()
    image = read_image(photos / photo)  # RGB uint8
    h, w = image.shape[:2]
    opencv_ssd.setInput(cv2.dnn.blobFromImage(np.ascontiguousarray(image[..., ::-1]), size=(300, 300), swapRB=True))
    ref = opencv_ssd.forward()[0, 0]
    ref = ref[ref[:, 2] >= 0.3]
    ours = detect(model, [torch.from_numpy(image).permute(2, 0, 1)], torch.device("cpu"))[0]
    keep = ours["scores"] >= 0.3
    assert sorted(COCO_IDS[int(label)] for label in ours["labels"][keep]) == sorted(int(c) for c in ref[:, 1])
    if not len(ref):
        return
    # TF clips boxes to the image, OpenCV's DetectionOutput does not: clip its boxes as TF's graph does
    ref_boxes = torch.from_numpy(np.clip(ref[:, 3:7], 0, 1) * np.array([w, h, w, h])).float()
    iou = box_iou(ref_boxes, ours["boxes"][keep])
    best = iou.argmax(1)
    assert (iou.max(1).values >= 0.99).all(), iou
    torch.testing.assert_close(ours["scores"][keep][best], torch.from_numpy(ref[:, 2]), atol=0.01, rtol=0)
    assert [COCO_IDS[int(label)] for label in ours["labels"][keep][best]] == [int(c) for c in ref[:, 1]]


def test_the_fixed_size_input_is_opencvs_resize_scaled_to_unit(photos):
    """What `detect` feeds SSD and YOLO: OpenCV's bilinear resize of the HWC image (made plane by plane here), then
    float [0, 1] exactly as PyTorch's division makes it, whatever the input's memory layout (slices are views)."""
    image = read_image(photos / "motorcycle_left.png")
    for chw in (torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(image).permute(2, 0, 1)[:, 10:300, 5:]):
        hwc = np.ascontiguousarray(chw.permute(1, 2, 0).numpy())
        resized = resize_uint8(chw, (300, 320))
        assert resized.shape == (3, 300, 320)
        assert np.array_equal(resized.permute(1, 2, 0).numpy(), cv2.resize(hwc, (320, 300), interpolation=cv2.INTER_LINEAR))
        for uint8 in (resized, chw):
            scaled = to_device([uint8], torch.device("cpu"))[0]
            assert scaled.dtype == torch.float32 and torch.equal(scaled, uint8.float().div(255))


def test_postprocess_keeps_the_right_boxes(tmp_path):
    """Zero regressions decode to the default boxes themselves; scores are set by hand (softmax over 3 logits)."""
    ssd = build_model(load_pipeline(_tiny_ssd(tmp_path, "nms_thresh: 0.5, score_thresh: 0.2, topk_candidates: 2")),
                      2, pretrained=False).model
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0],    # A
                            [1.0, 0.0, 11.0, 10.0],    # B: IoU(A, B) = 90/110 = 0.82 → suppressed by A
                            [20.0, 20.0, 30.0, 30.0],  # C: apart
                            [0.0, 0.0, 10.0, 9.0],     # D: same place as A, but the other class
                            [40.0, 40.0, 50.0, 50.0]])  # E: below the score threshold
    probs = torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0], [0.4, 0.0, 0.6], [0.9, 0.1, 0.0]])
    head = {"bbox_regression": torch.zeros(1, 5, 4), "cls_logits": probs.clamp(min=1e-6).log()[None]}
    out = ssd.postprocess_detections(head, [anchors], [(64, 64)])[0]
    # class 1 has three candidates above 0.2 (A 0.9, B 0.8, C 0.7) but topk_candidates=2 keeps A and B; NMS drops B
    kept = {(int(label), tuple(box.tolist())) for box, label in zip(out["boxes"], out["labels"])}
    assert kept == {(1, (0.0, 0.0, 10.0, 10.0)), (2, (0.0, 0.0, 10.0, 9.0))}
    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.6]))


@pytest.mark.assets
def test_the_coco_pipeline_predicts_without_a_training_run(photos, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    pipeline = Pipeline.from_yaml("pipelines/coco_ssd_mobilenet_v2.yaml", [f"output.dir={tmp_path / 'runs'}"])
    report = pipeline.predict(photos / "coffee.png", tmp_path / "pred", conf=0.5, save_images=False)
    assert report.processed == 1
    rows = (tmp_path / "pred" / "detections.csv").read_text().splitlines()[1:]
    assert {row.split(",")[1] for row in rows} == {"cup", "bowl", "dining table"}


@pytest.mark.assets
def test_reuse_classes_copies_the_coco_predictors_rows_for_shared_classes(photos, tmp_path, monkeypatch):
    """Fine-tuning the COCO SSD for [person, Dog, tvmonitor, widget] (tvmonitor → COCO's "tv" by class_map): in
    every level's class predictor, each default box's background and shared-class outputs equal COCO's, and the
    widget's stay fresh; before any training step the reused model finds the astronaut as a person."""
    from cvpipe.errors import ConfigError
    from cvpipe.models.heads import reuse_classes
    from cvpipe.models.weights import WeightsCatalog

    monkeypatch.chdir(REPO)
    classes = ["person", "Dog", "tvmonitor", "widget"]
    config = load_pipeline("coco_ssd_mobilenet_v2", [f"data.classes=[{', '.join(classes)}]",
                                                     "model.head.class_map={tvmonitor: tv}"])
    catalog = WeightsCatalog.load()
    torch.manual_seed(0)
    model = build_model(config, len(classes), catalog=catalog)
    torch.manual_seed(0)
    fresh = build_model(config, len(classes), catalog=catalog)
    assert reuse_classes(model, config, classes, catalog=catalog) == {"person": "person", "Dog": "dog",
                                                                       "tvmonitor": "tv"}
    coco = catalog.get("ssd_mobilenet_v2.coco").class_names()
    source, own, untouched = catalog.state_dict("ssd_mobilenet_v2.coco"), model.state_dict(), fresh.state_dict()
    levels = [k for k in own if ".classification_head." in k and k.endswith("weight")]
    assert len(levels) == 6
    for name in levels:
        anchors = own[name].shape[0] // 5
        for a in range(anchors):
            for mine, theirs in ((0, 0), (1, coco.index("person") + 1), (2, coco.index("dog") + 1),
                                 (3, coco.index("tv") + 1)):
                torch.testing.assert_close(own[name][a * 5 + mine], source[name][a * 81 + theirs], rtol=0, atol=0)
            torch.testing.assert_close(own[name][a * 5 + 4], untouched[name][a * 5 + 4], rtol=0, atol=0)
    # before any step, the reused rows already find the astronaut as a person, as the COCO model does
    found = detect(model.eval(), [torch.from_numpy(read_image(photos / "astronaut.png")).permute(2, 0, 1)],
                   torch.device("cpu"))[0]
    assert (found["scores"][found["labels"] == 0] > 0.5).any()
    with pytest.raises(ConfigError, match="class_map.tvmonitor: 'telly' is not a class"):
        bad = load_pipeline("coco_ssd_mobilenet_v2", [f"data.classes=[{', '.join(classes)}]",
                                                      "model.head.class_map={tvmonitor: telly}"])
        reuse_classes(fresh, bad, classes, catalog=catalog)


@pytest.mark.assets
def test_tree_crown_ssd_starts_from_the_coco_ssd_with_a_shallower_neck(monkeypatch):
    """treecrowns_ssd keeps two of the COCO SSD's four extra blocks: the two load from the file, the deeper two are
    left out, the trunk loads whole and the predictors (other levels and classes) start fresh."""
    from cvpipe.models.weights import WeightsCatalog

    monkeypatch.chdir(REPO)
    catalog = WeightsCatalog.load()
    model = build_model(load_pipeline("pipelines/treecrowns_ssd.yaml"), 1, catalog=catalog)
    source, own = catalog.state_dict("ssd_mobilenet_v2.coco"), model.state_dict()
    extras = sorted(k for k in own if k.startswith("model.backbone.extras.") and not k.endswith("num_batches_tracked"))
    assert extras and {k.split(".")[3] for k in extras} == {"0", "1"}
    for name in extras:
        torch.testing.assert_close(own[name], source[name], rtol=0, atol=0)
    assert any(k.startswith("model.backbone.extras.3.") for k in source)
