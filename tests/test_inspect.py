"""`cvpipe inspect` against the seeds' worked tables (shared/seeds/001: LeNet-5, AlexNet, RF, Inception)."""

import json

from torch import nn

from cvpipe.cli import main
from cvpipe.models.classic import alexnet, inception_3a, lenet5, resnet_basic_block, vgg16
from cvpipe.models.inspect import profile


def shapes(stats, types):
    return [tuple(s.out_shape) for s in stats if s.type in types]


def test_lenet5_table_and_parameter_count():
    stats, totals = profile(lenet5(), (1, 32, 32))
    assert shapes(stats, ("Conv2d", "AvgPool2d", "Linear")) == [
        (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1), (84,), (10,)]
    expected = (5 * 5 * 1 * 6 + 6) + (5 * 5 * 6 * 16 + 16) + (5 * 5 * 16 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert totals["params"] == expected == 61706
    assert [s.macs for s in stats if s.type == "Conv2d"] == [5 * 5 * 1 * 28 * 28 * 6, 5 * 5 * 6 * 10 * 10 * 16,
                                                             5 * 5 * 16 * 120]


def test_alexnet_shapes():
    stats, _ = profile(alexnet(), (3, 227, 227))
    assert shapes(stats, ("Conv2d", "MaxPool2d")) == [
        (96, 55, 55), (96, 27, 27), (256, 27, 27), (256, 13, 13), (384, 13, 13), (384, 13, 13), (256, 13, 13),
        (256, 6, 6)]
    assert shapes(stats, ("Linear",)) == [(4096,), (4096,), (1000,)]


def test_three_stacked_3x3_convs_see_7_pixels():
    stats, _ = profile(nn.Sequential(*(nn.Conv2d(4, 4, 3) for _ in range(3))), (4, 16, 16))
    assert [s.rf for s in stats] == [3, 5, 7]


def test_receptive_field_with_strides():
    # RF_l = RF_{l-1} + (k-1) * prod(strides before): 1 + 2*1 = 3, then 3 + 2*2 = 7, then 7 + 2*4 = 15
    stats, _ = profile(nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3)),
                       (1, 33, 33))
    assert [(s.rf, s.stride) for s in stats] == [(3, 2), (7, 4), (15, 4)]


def test_inception_5x5_branch_cost_with_and_without_bottleneck():
    _, plain = profile(nn.Conv2d(192, 32, 5, padding=2), (192, 28, 28))
    _, bottleneck = profile(nn.Sequential(nn.Conv2d(192, 16, 1), nn.Conv2d(16, 32, 5, padding=2)), (192, 28, 28))
    assert plain["macs"] == 120_422_400
    assert bottleneck["macs"] == 12_443_648


def test_cli_inspect_json(capsys):
    assert main(["inspect", "lenet5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["totals"]["params"] == 61706 and report["layers"][0]["out_shape"] == [6, 28, 28]
    assert main(["inspect", "mobilenetv2_100", "--input", "3x64x64"]) == 0
    assert "total:" in capsys.readouterr().out


def test_vgg16_has_13_convolutions_and_138m_parameters():
    stats, totals = profile(vgg16(), (3, 224, 224))
    assert len([s for s in stats if s.type == "Conv2d"]) == 13
    assert shapes(stats, ("MaxPool2d",))[-1] == (512, 7, 7)
    assert totals["params"] == 138_357_544


def test_inception_3a_concatenates_four_branches():
    stats, totals = profile(inception_3a(), (192, 28, 28))
    convs = {s.name: s for s in stats if s.type == "Conv2d"}
    assert convs["branch5.1.0"].macs == 5 * 5 * 16 * 28 * 28 * 32  # the seeds' bottlenecked 5×5 branch ...
    assert convs["branch5.0.0"].macs + convs["branch5.1.0"].macs == 12_443_648  # ... 12.4 M MACs in all
    import torch

    assert inception_3a()(torch.zeros(1, 192, 28, 28)).shape == (1, 64 + 128 + 32 + 32, 28, 28)


def test_resnet_basic_block_keeps_the_shape():
    stats, totals = profile(resnet_basic_block(), (64, 56, 56))
    assert tuple(stats[-1].out_shape) == (64, 56, 56)
    assert totals["params"] == 2 * (3 * 3 * 64 * 64) + 2 * (2 * 64)  # two bias-free convs + two BatchNorms
