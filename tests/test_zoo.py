"""Weights by reference to their owners' zoos (timm:, hf-hub:, torchvision:, deepforest:), proved offline by parity.

The real files cannot be downloaded here, so each test puts a file with the real file name and the owner's real
tensor names (the owner's model, randomly initialised) where the owner's loader looks for it (torch.hub's and the
Hugging Face hub's caches), switches the hub offline, and checks cvpipe's model against the owner's own model
loaded from the same file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from cvpipe.config import BackboneConfig
from cvpipe.engine.checkpoint import load_trained, save_checkpoint
from cvpipe.errors import WeightsError
from cvpipe.io.images import read_image
from cvpipe.models.backbones import build_backbone
from cvpipe.models.weights import IMAGENET, WeightsCatalog
from cvpipe.pipeline import Pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty torch.hub and Hugging Face caches of this test's own, the hub offline."""
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def put_in_hf_cache(cache: Path, repo: str, files: dict[str, object]) -> Path:
    """Files as huggingface_hub keeps a downloaded snapshot (refs/main → snapshots/<commit>/): a state dict as
    safetensors, a dict as JSON. Returns the snapshot folder."""
    folder = cache / "hf" / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    for name, content in files.items():
        if name.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in content.items()}, str(snapshot / name))
        else:
            (snapshot / name).write_text(json.dumps(content))
    return snapshot


def put_in_torch_hub(cache: Path, url: str, model: torch.nn.Module) -> Path:
    path = cache / "torch" / "hub" / "checkpoints" / Path(url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def photo_tensor(photos: Path, name: str = "astronaut.png") -> torch.Tensor:
    return torch.from_numpy(read_image(photos / name)).permute(2, 0, 1).float() / 255


def assert_same_detections(ours: dict, theirs: dict, names: tuple[list, list] | None = None) -> None:
    """The same boxes, scores and labels (and masks, where there are any); with `names` (ours, theirs), labels
    compared by the class names each side gives them."""
    assert len(ours["boxes"]) == len(theirs["boxes"]) > 0
    torch.testing.assert_close(ours["boxes"], theirs["boxes"], rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(ours["scores"], theirs["scores"], rtol=1e-4, atol=1e-4)
    if names is None:
        assert torch.equal(ours["labels"], theirs["labels"])
    else:
        assert [names[0][k] for k in ours["labels"]] == [names[1][k] for k in theirs["labels"]]
    if "masks" in theirs:
        torch.testing.assert_close(ours["masks"], theirs["masks"], rtol=1e-3, atol=1e-3)


def test_a_timm_reference_gives_timms_own_pretrained_features(caches, photos):
    import timm

    torch.manual_seed(0)
    snapshot = put_in_hf_cache(caches, "timm/resnet18.a1_in1k",
                               {"model.safetensors": timm.create_model("resnet18").state_dict()})
    catalog = WeightsCatalog.load(caches / "weights")
    ours = build_backbone(BackboneConfig(name="resnet18", weights="timm:resnet18.a1_in1k", out_indices=[2, 3, 4],
                                         freeze=0), catalog=catalog).eval()
    theirs = timm.create_model("resnet18.a1_in1k", pretrained=True, features_only=True, out_indices=(2, 3, 4)).eval()
    x = photo_tensor(photos)[None, :, :224, :224]
    with torch.no_grad():
        for a, b in zip(ours(x), theirs(x), strict=True):
            assert torch.equal(a, b)
    file = snapshot / "model.safetensors"
    assert catalog.resolved["timm:resnet18.a1_in1k"] == {"file": str(file),
                                                         "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    assert ours.preprocess.interpolation == "bicubic" and ours.preprocess.mean == (0.485, 0.456, 0.406)
    # the same repo as hf-hub:REPO (timm reads the architecture from its config.json)
    (snapshot / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 1000,
                                                      "pretrained_cfg": {"mean": [0.485, 0.456, 0.406]}}))
    hub = build_backbone(BackboneConfig(name="resnet18", weights="hf-hub:timm/resnet18.a1_in1k",
                                        out_indices=[2, 3, 4], freeze=0), catalog=catalog).eval()
    with torch.no_grad():
        assert torch.equal(hub(x)[-1], theirs(x)[-1])


@pytest.mark.parametrize("ref, message", [
    ("timm:resnet34.a1_in1k", "not in the Hugging Face cache"),  # offline, not fetched
    ("timm:resnet18.nope", "Invalid pretrained tag (nope) for resnet18. timm knows: a1_in1k"),
    ("timm:resnet_18", 'did you mean "resnet18"'),
    ("torchvision:ResNet50_Weights.NOPE", "ResNet50_Weights has no member 'NOPE'; it has IMAGENET1K_V1, IMAGENET1K_V2"),
    ("torchvision:Resnet50_Weights.IMAGENET1K_V2", 'did you mean "ResNet50_Weights"'),
    ("deepforest:cat", "DeepForest's released models are deepforest:tree, deepforest:bird"),
])
def test_a_reference_that_cannot_be_had_says_what_to_do(ref, message, caches):
    name = ref.partition(":")[2].partition(".")[0] if ref.startswith("timm:") else "resnet50"
    with pytest.raises(WeightsError) as e:
        build_backbone(BackboneConfig(name=name.replace("_18", "18"), weights=ref, out_indices=[2, 3, 4], freeze=0),
                       catalog=WeightsCatalog.load(caches / "weights"))
    assert message in str(e.value), str(e.value)


def test_a_torchvision_file_that_is_not_here_offline_says_where_to_put_it(caches, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    catalog = WeightsCatalog.load(caches / "weights")
    with pytest.raises(WeightsError) as e:
        catalog.fetch("torchvision:ResNet18_Weights.IMAGENET1K_V1")
    assert "is not in torch.hub's cache" in str(e.value) and "cvpipe weights fetch torchvision:ResNet18" in str(e.value)
    assert str(caches / "torch" / "hub" / "checkpoints") in str(e.value)


def test_a_download_that_fails_torchvisions_hash_is_refused_and_not_kept(caches, monkeypatch):
    """torch.hub checks the hash prefix torchvision's file names carry: a file with other bytes is refused."""
    from cvpipe.models import zoo

    wrong = caches / "resnet18-f37072fd.pth"
    torch.save({"x": torch.zeros(1)}, wrong)
    weight = type("W", (), {"url": wrong.as_uri(), "meta": {}})()
    monkeypatch.setattr(zoo, "torchvision_weight", lambda ref: (weight, "resnet18"))
    with pytest.raises(WeightsError) as e:
        WeightsCatalog.load(caches / "weights").fetch("torchvision:ResNet18_Weights.IMAGENET1K_V1")
    assert "fails its hash check" in str(e.value)
    assert not list((caches / "torch" / "hub" / "checkpoints").iterdir())


def test_a_torchvision_imagenet_resnet_gives_the_trunk_torchvision_computes(caches, photos):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    put_in_torch_hub(caches, torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url, reference)
    ours = build_backbone(BackboneConfig(name="resnet50", weights="torchvision:ResNet50_Weights.IMAGENET1K_V2",
                                         out_indices=[4], freeze=0), catalog=WeightsCatalog.load(caches / "weights"))
    x = photo_tensor(photos)[None, :, :224, :224]
    trunk = torch.nn.Sequential(*list(reference.children())[:-2]).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x)[0], trunk(x), rtol=1e-4, atol=1e-4)


def spread_scores(model: torch.nn.Module, bias: float = -4.0) -> torch.nn.Module:
    """A randomly initialised detector scores every anchor or region about alike and low (RetinaNet 1 %, below
    the 5 % threshold); wider class logits spread its scores, so that it detects something and near-ties are
    rare."""
    with torch.no_grad():
        if hasattr(model, "roi_heads"):  # Faster / Mask R-CNN: a softmax over 91 outputs
            model.roi_heads.box_predictor.cls_score.weight.mul_(40)
        elif hasattr(model.head.classification_head, "module_list"):
            pass  # SSDlite: a softmax per default box, spread enough once it has activations (below)
        else:
            model.head.classification_head.cls_logits.weight.mul_(4)
            model.head.classification_head.cls_logits.bias.fill_(bias)
    return model.eval()


def retinanet_with_detections(builder, **kwargs) -> torch.nn.Module:
    """The owner's model, randomly initialised, its scores spread."""
    torch.manual_seed(0)
    model = builder(weights=None, weights_backbone=None, **kwargs)
    if "mobilenet" in builder.__name__:  # its initialisation leaves no activations after twenty layers; He's does
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(module.weight)
            if hasattr(model, "rpn"):  # many proposals above its RPN's 5 % threshold, about where the anchors are
                model.rpn.head.cls_logits.bias.fill_(2.0)
                model.rpn.head.cls_logits.weight.mul_(0.01)
                model.rpn.head.bbox_pred.weight.mul_(0.01)
    return spread_scores(model)


TORCHVISION_DETECTORS = {  # name: (builder, weights enum, bundled pipeline, overrides that make it that model)
    "retinanet_v1": ("retinanet_resnet50_fpn", "RetinaNet_ResNet50_FPN_Weights", "coco_retinanet_v2",
                     ["model.neck.extra_levels=p6p7", "model.bn_eps=0", "model.head.head_norm=none",
                      "model.head.box_loss=l1"]),
    "retinanet_v2": ("retinanet_resnet50_fpn_v2", "RetinaNet_ResNet50_FPN_V2_Weights", "coco_retinanet_v2", []),
    "fcos": ("fcos_resnet50_fpn", "FCOS_ResNet50_FPN_Weights", "coco_fcos", []),
    "faster_rcnn_v1": ("fasterrcnn_resnet50_fpn", "FasterRCNN_ResNet50_FPN_Weights", "coco_faster_rcnn_v2",
                       ["model.neck.norm=none", "model.bn_eps=0", "model.head.rpn_convs=1",
                        "model.head.box_head=mlp"]),
    "faster_rcnn_v2": ("fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights", "coco_faster_rcnn_v2", []),
    "mask_rcnn_v1": ("maskrcnn_resnet50_fpn", "MaskRCNN_ResNet50_FPN_Weights", "coco_mask_rcnn_v2",
                     ["model.neck.norm=none", "model.bn_eps=0", "model.head.rpn_convs=1",
                      "model.head.box_head=mlp", "model.head.mask_norm=none"]),
    "mask_rcnn_v2": ("maskrcnn_resnet50_fpn_v2", "MaskRCNN_ResNet50_FPN_V2_Weights", "coco_mask_rcnn_v2", []),
    "faster_rcnn_mobilenet_v3": ("fasterrcnn_mobilenet_v3_large_fpn", "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
                                 "coco_faster_rcnn_mobilenet_v3", []),
    "faster_rcnn_mobilenet_v3_320": ("fasterrcnn_mobilenet_v3_large_320_fpn",
                                     "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights", "coco_faster_rcnn_mobilenet_v3",
                                     ["model.head.min_size=320", "model.head.max_size=640",
                                      "model.head.rpn_pre_nms_top_n=150", "model.head.rpn_post_nms_top_n=150"]),
    "ssdlite": ("ssdlite320_mobilenet_v3_large", "SSDLite320_MobileNet_V3_Large_Weights", "coco_ssdlite", []),
    "ssd300": ("ssd300_vgg16", "SSD300_VGG16_Weights", "coco_ssd300", []),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_DETECTORS))
def test_a_torchvision_coco_detector_predicts_what_torchvisions_own_model_does(name, caches, photos):
    from torchvision.models import detection

    builder_name, enum_name, pipeline, overrides = TORCHVISION_DETECTORS[name]
    builder, enum = getattr(detection, builder_name), getattr(detection, enum_name)
    owner = retinanet_with_detections(builder, num_classes=91)
    put_in_torch_hub(caches, enum.COCO_V1.url, owner)
    theirs = builder(weights=enum.COCO_V1).eval()  # torchvision's own loader, from the same cache
    theirs = theirs.to(memory_format=torch.channels_last)  # as cvpipe runs its models (train.channels_last)
    # every one of the file's 91 outputs, as torchvision labels them
    overrides = ["data.classes=[]", f"model.weights=torchvision:{enum_name}.COCO_V1", *overrides]
    config = Pipeline.from_yaml(pipeline, overrides).config
    model, classes = load_trained(config, None, torch.device("cpu"))
    categories = enum.COCO_V1.meta["categories"]
    background_first = builder_name.startswith(("fasterrcnn", "maskrcnn", "ssd"))  # their output 0 is the background
    assert classes == (categories[1:] if background_first else categories)
    images = [photo_tensor(photos, "coffee.png" if background_first else "astronaut.png")]  # one real photo each, for time
    with torch.no_grad():
        for ours, reference in zip(model(images), theirs(images), strict=True):
            assert_same_detections(ours, reference, (classes, categories))
    assert WeightsCatalog.load().get(config.model.weights).trained_on.startswith("COCO-val2017 (box_map")


def test_the_ready_coco_retinanet_picks_cocos_80_classes_from_torchvisions_91(caches):
    from torchvision.models import detection

    enum = detection.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1
    owner = retinanet_with_detections(detection.retinanet_resnet50_fpn_v2, num_classes=91)
    put_in_torch_hub(caches, enum.url, owner)
    config = Pipeline.from_yaml("coco_retinanet_v2").config
    model, classes = load_trained(config, None, torch.device("cpu"))
    assert len(classes) == 80 and classes[0] == "person" and classes[-1] == "toothbrush"
    mine = model.model.head.classification_head.cls_logits
    theirs = owner.head.classification_head.cls_logits
    categories = enum.meta["categories"]
    for name in ("person", "tv", "toothbrush"):  # anchor 0's and anchor 8's rows, COCO ids 1, 72, 90
        i, k = classes.index(name), categories.index(name)
        for anchor in (0, 8):
            assert torch.equal(mine.weight[anchor * 80 + i], theirs.weight[anchor * 91 + k])
            assert torch.equal(mine.bias[anchor * 80 + i], theirs.bias[anchor * 91 + k])
    assert torch.equal(model.model.head.regression_head.bbox_reg.weight, owner.head.regression_head.bbox_reg.weight)


def test_the_ready_coco_mask_rcnn_picks_the_background_and_cocos_80_classes_from_torchvisions_rows(caches):
    from torchvision.models import detection

    enum = detection.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    torch.manual_seed(0)
    owner = detection.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91).eval()
    put_in_torch_hub(caches, enum.url, owner)
    model, classes = load_trained(Pipeline.from_yaml("coco_mask_rcnn_v2").config, None, torch.device("cpu"))
    assert len(classes) == 80 and classes[:2] == ["person", "bicycle"]
    ours, theirs = model.model.roi_heads, owner.roi_heads
    categories = enum.meta["categories"]  # torchvision's output k is categories[k]; ours: 0 background, i + 1
    for name, i in (("__background__", -1), ("person", 0), ("tv", classes.index("tv")), ("toothbrush", 79)):
        k = categories.index(name)
        assert torch.equal(ours.box_predictor.cls_score.weight[i + 1], theirs.box_predictor.cls_score.weight[k])
        assert torch.equal(ours.box_predictor.bbox_pred.weight[4 * (i + 1): 4 * (i + 2)],
                           theirs.box_predictor.bbox_pred.weight[4 * k: 4 * (k + 1)])
        assert torch.equal(ours.mask_predictor.mask_fcn_logits.bias[i + 1], theirs.mask_predictor.mask_fcn_logits.bias[k])
    assert torch.equal(ours.box_head[0][0].weight, theirs.box_head[0][0].weight)


def deepforest_own_model(file: Path, config: dict) -> torch.nn.Module:
    """DeepForest 2.1's RetinaNetHub, as `deepforest.models.retinanet` builds it (torchvision's RetinaNet on
    `retinanet_resnet50_fpn(weights=None).backbone`) and PyTorchModelHubMixin loads it (safetensors' load_model)."""
    from safetensors.torch import load_model
    from torchvision.models.detection import RetinaNet, retinanet_resnet50_fpn

    model = RetinaNet(retinanet_resnet50_fpn(weights=None).backbone, num_classes=config["num_classes"],
                      score_thresh=config["score_thresh"], nms_thresh=config["nms_thresh"])
    load_model(model, str(file))
    return model.eval()


def test_deepforest_tree_predicts_what_deepforests_own_model_does(caches, tmp_path):
    from torchvision.models.detection import RetinaNet, retinanet_resnet50_fpn

    torch.manual_seed(0)  # DeepForest's construction fetches torchvision's ImageNet ResNet-50 first (then replaced)
    put_in_torch_hub(caches, torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url, torchvision.models.resnet50())
    owner = spread_scores(RetinaNet(retinanet_resnet50_fpn(weights=None).backbone, num_classes=1, score_thresh=0.1,
                                    nms_thresh=0.05), bias=-1.0)
    config = {"num_classes": 1, "nms_thresh": 0.05, "score_thresh": 0.1, "label_dict": {"Tree": 0}}
    snapshot = put_in_hf_cache(caches, "weecology/deepforest-tree",
                               {"model.safetensors": owner.state_dict(), "config.json": config})
    theirs = deepforest_own_model(snapshot / "model.safetensors", config).to(memory_format=torch.channels_last)
    model, classes = load_trained(Pipeline.from_yaml("deepforest_tree").config, None, torch.device("cpu"))
    assert classes == ["Tree"]
    from cvpipe.data.fetchers import fetch_dataset

    crop = torch.from_numpy(read_image(fetch_dataset("treecrowns", REPO / "data") / "train" / "OSBS_029.png"))
    crop = crop.permute(2, 0, 1)
    window = crop[:, :400, :400].float() / 255
    with torch.no_grad():
        assert_same_detections(model([window])[0], theirs([window])[0])


def test_train_from_deepforest_offline_records_the_file_it_started_from(caches, tmp_path, capsys):
    """`cvpipe train` with model.weights: deepforest:tree from a pre-filled Hugging Face cache, the hub offline:
    it says which file it started from, and best.pt and metrics.json record it with its sha256; predict runs the
    result."""
    from torchvision.models.detection import RetinaNet, retinanet_resnet50_fpn

    from cvpipe.cli import main
    from cvpipe.data.fetchers import fetch_dataset

    torch.manual_seed(0)
    put_in_torch_hub(caches, torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url, torchvision.models.resnet50())
    owner = RetinaNet(retinanet_resnet50_fpn(weights=None).backbone, num_classes=1)
    snapshot = put_in_hf_cache(caches, "weecology/deepforest-tree", {
        "model.safetensors": owner.state_dict(),
        "config.json": {"num_classes": 1, "nms_thresh": 0.05, "score_thresh": 0.1, "label_dict": {"Tree": 0}}})
    data = fetch_dataset("sample", REPO / "data") / "voc"
    small = ["model.head.min_size=128", "model.head.max_size=128", "tiling.size=128", "train.epochs=1",
             f"data.root={data}", f"output.dir={tmp_path / 'runs'}", "eval.interval=1"]
    assert main(["train", "treecrowns_deepforest", "--no-tensorboard", "--set", *small]) == 0
    file = snapshot / "model.safetensors"
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    assert f"starting from deepforest:tree: {file} (sha256 {digest[:12]}…)" in capsys.readouterr().out
    run_dir = next((tmp_path / "runs").glob("treecrowns_deepforest*"))
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["pretrained"] == {"deepforest:tree": {"file": str(file), "sha256": digest}}
    assert json.loads((run_dir / "metrics.json").read_text())["pretrained"]["deepforest:tree"]["sha256"] == digest
    assert best["preprocess"]["size"] == 400 and best["preprocess"]["mean"] == (0.485, 0.456, 0.406)
    shutil.rmtree(caches / "hf")  # the result predicts on a machine that never had DeepForest's files
    assert main(["predict", "treecrowns_deepforest", "--set", *small, "--source", str(data / "val"),
                 "--out", str(tmp_path / "pred"), "--no-images"]) == 0
    assert (tmp_path / "pred" / "results.json").exists()


def test_a_checkpoint_started_from_a_hub_repo_runs_where_the_repo_never_was(caches, tmp_path):
    """best.pt records its backbone's preprocessing, so running it asks no weights' owner: offline, without the
    repo's config.json in the cache, a model started from hf-hub:REPO loads with the mean and std it trained with."""
    from cvpipe.models.heads import build_model

    config = Pipeline.from_yaml("treecrowns_faster_rcnn", ["model.backbone.weights=hf-hub:someone/crowns-backbone"]).config
    model = build_model(config, 1, pretrained=False, preprocess=IMAGENET)
    recorded = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "size": 256, "resize": 256,
                "interpolation": "bicubic"}
    save_checkpoint(tmp_path / "best.pt", {"model": model.state_dict(), "classes": ["Tree"], "preprocess": recorded})
    loaded, classes = load_trained(config, tmp_path / "best.pt", torch.device("cpu"))
    assert classes == ["Tree"]
    assert loaded.model.transform.image_mean == [0.5, 0.5, 0.5] and loaded.model.transform.image_std == [0.25] * 3
    save_checkpoint(tmp_path / "old.pt", {"model": model.state_dict(), "classes": ["Tree"]})  # from before the record
    with pytest.raises(WeightsError, match="hf-hub:someone/crowns-backbone"):
        load_trained(config, tmp_path / "old.pt", torch.device("cpu"))


def test_weights_list_and_fetch_speak_of_references(caches, capsys):
    from cvpipe.cli import main

    torch.manual_seed(0)
    path = put_in_torch_hub(caches, torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url, torchvision.models.resnet18())
    assert main(["weights", "fetch", "torchvision:ResNet18_Weights.IMAGENET1K_V1"]) == 0
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"torchvision:ResNet18_Weights.IMAGENET1K_V1: {path} (sha256 {digest})" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "deepforest:tree" in out and "timm:convnext_tiny.fb_in22k" in out
    assert main(["weights", "fetch", "deepforest:tree"]) == 2
    assert "not in the Hugging Face cache" in capsys.readouterr().err
