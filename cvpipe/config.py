"""Pipeline schema (pydantic), YAML loading with line numbers, `--set` overrides, precise errors.

A pipeline file is merged over `defaults.yaml` (the one place defaults live), overrides are applied,
and the result is validated before any work starts. Every problem becomes one line:
`FILE:LINE: model.backbone.freeze: expected int 0..5, got "all"`.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from cvpipe.errors import ConfigError
from cvpipe.paths import find_pipeline, resolve_input

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")

Task = Literal["classify", "detect", "segment", "stylize"]
DataFormat = Literal["coco", "voc", "yolo", "folders", "masks", "images"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN threshold would pass every bound check


class DataConfig(Strict):
    format: DataFormat
    # null: no dataset (a ready pretrained model that only predicts). Relative: to the pipeline file's folder,
    # then to the data folder (cvpipe/paths.py). Only train, eval and augment preview need it to exist.
    root: Path | None
    train: str | None  # null: the pipeline has no such split (a ready pretrained detector that only predicts)
    val: str | None
    classes: list[str]
    # segment: the mask value of pixels no loss or metric counts (unlabelled, object borders)
    ignore_index: Annotated[int, Field(ge=0, le=255)] = 255


class AugmentConfig(Strict):
    train: list[str | dict[str, dict[str, Any] | None]]
    eval: list[str | dict[str, dict[str, Any] | None]]
    min_visibility: Annotated[float, Field(ge=0.0, le=1.0)]
    min_area: Annotated[float, Field(ge=0.0)]


class BackboneConfig(Strict):
    name: str
    weights: str | None
    out_indices: list[Annotated[int, Field(ge=0, le=5)]]
    freeze: Annotated[int, Field(ge=0, le=5)]
    frozen_bn: bool = False
    # module names whose outputs are the feature levels, instead of out_indices (e.g. an expansion layer)
    feature_nodes: list[str] = []
    timm_args: dict[str, str | int | float | bool] = {}  # extra timm.create_model arguments: {pad_type: same}


class NeckConfig(Strict):
    name: Literal["none", "fpn", "pan", "ssd"]  # pan: FPN's top-down path + a bottom-up path (PANet, YOLO)
    out_channels: Annotated[int, Field(ge=1)]
    # ssd: extra down-sampling blocks after the last backbone level, one output depth each
    extra_blocks: list[Annotated[int, Field(ge=2)]] = [512, 256, 256, 128]
    depthwise: bool = False  # ssd: depthwise-separable extra blocks (SSDLite / TF's MobileNet SSDs)


class ClassifierHead(Strict):
    """Global pooling + dropout + linear layer over the last feature level."""

    name: Literal["classifier"]
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class FasterRCNNHead(Strict):
    """torchvision Faster R-CNN on the backbone's levels; one anchor-size tuple per FPN level."""

    name: Literal["faster_rcnn"]
    # one list per feature level; null = torchvision's progression, 32 px at the first level doubling per level
    anchor_sizes: list[list[Annotated[int, Field(gt=0)]]] | None = None
    aspect_ratios: list[Annotated[float, Field(gt=0)]] = [0.5, 1.0, 2.0]
    min_size: Annotated[int, Field(gt=0)] = 800  # short side the images are resized to (eval; train too)
    max_size: Annotated[int, Field(gt=0)] = 1333  # ... unless the long side would exceed this
    train_sizes: list[Annotated[int, Field(gt=0)]] = []  # multi-scale training: short sides picked at random
    rpn_pre_nms_top_n: Annotated[int, Field(gt=0)] = 1000  # proposals kept per level before the RPN's NMS
    rpn_post_nms_top_n: Annotated[int, Field(gt=0)] = 1000  # ... and per image after it
    roi_batch_size: Annotated[int, Field(gt=0)] = 512  # RoIs sampled per image for the box head's loss
    roi_sampling_ratio: Annotated[int, Field(ge=0)] = 2  # RoIAlign points per bin side (0 = adaptive)
    box_head_dim: Annotated[int, Field(gt=0)] = 1024  # width of the two fully connected layers after RoIAlign
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    detections_per_img: Annotated[int, Field(gt=0)] = 100


class SSDHead(Strict):
    """SSD (Liu et al. 2016) on the levels of an `ssd` neck: per location n + m − 1 default boxes from n sizes
    and m aspect ratios, IoU matching, hard-negative mining, smooth-L1 + cross-entropy."""

    name: Literal["ssd"]
    size: Annotated[int, Field(gt=0)] = 300  # images are resized to size × size
    min_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2  # box size at the first level, fraction of `size`
    max_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9  # ... at the last; levels between are spaced evenly
    # one list per level, fractions of `size`; null = [s_k, sqrt(s_k · s_k+1)] from min_scale/max_scale
    sizes: list[list[Annotated[float, Field(gt=0.0)]]] | None = None
    aspect_ratios: list[Annotated[float, Field(gt=0.0)]] = [1.0, 2.0, 0.5, 3.0, 0.3333]  # first is the main one
    reduce_first_level: bool = False  # TF's reduce_boxes_in_lowest_layer: level 0 gets (0.1, 1), (s_0, 2), (s_0, 1/2)
    depthwise: bool = False  # SSDLite: depthwise-separable 3×3 predictors
    score: Literal["softmax", "sigmoid"] = "softmax"  # sigmoid: independent per-class scores (TF's SSDs)
    box_weights: list[Annotated[float, Field(gt=0.0)]] = [10.0, 10.0, 5.0, 5.0]  # box coder scales x, y, w, h
    iou_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5  # a default box matching a ground truth this well is positive
    neg_pos_ratio: Annotated[float, Field(gt=0.0)] = 3.0  # hard negatives kept per positive
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.45
    detections_per_img: Annotated[int, Field(gt=0)] = 200
    topk_candidates: Annotated[int, Field(gt=0)] = 400  # best boxes per class that go into NMS


class YOLOHead(Strict):
    """Anchor-free YOLO: each cell of each level predicts one box (distances to its four sides) and class scores
    from decoupled branches; task-aligned assignment (TOOD), IoU-family box loss, binary cross-entropy."""

    name: Literal["yolo"]
    size: Annotated[int, Field(gt=0)] = 640  # images are resized to size × size (a multiple of the largest stride)
    channels: Annotated[int, Field(gt=0)] = 64  # width of the classification and box branches
    topk: Annotated[int, Field(gt=0)] = 10  # cells assigned per ground truth, by alignment score^alpha · IoU^beta
    alpha: Annotated[float, Field(ge=0.0)] = 1.0
    beta: Annotated[float, Field(ge=0.0)] = 6.0
    box_loss: Literal["giou", "ciou"] = "ciou"
    box_weight: Annotated[float, Field(ge=0.0)] = 7.5
    cls_weight: Annotated[float, Field(ge=0.0)] = 0.5
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6
    detections_per_img: Annotated[int, Field(gt=0)] = 300
    topk_candidates: Annotated[int, Field(gt=0)] = 1000  # best (cell, class) pairs that go into NMS


class ProposalsConfig(Strict):
    """Selective search (fast mode): Felzenszwalb segmentations at `scales` in each colour space, grouped."""

    max: Annotated[int, Field(gt=0)] = 2000  # proposals per image, best ranked first (~2,000 as published)
    scales: list[Annotated[int, Field(gt=0)]] = [50, 100]  # Felzenszwalb's k: larger gives larger regions
    colour_spaces: list[Literal["hsv", "lab", "rgb"]] = ["hsv", "lab"]
    sigma: Annotated[float, Field(ge=0.0)] = 0.8  # Gaussian smoothing before segmentation
    min_size: Annotated[int, Field(gt=0)] = 10  # proposals narrower or shorter than this (pixels) are dropped


class RCNNHead(Strict):
    """R-CNN (Girshick et al. 2014): each proposal warped to `warp_size`, pooled CNN features, one linear SVM per
    class with hard-negative mining, class-specific box regression, NMS. Uses the last backbone level."""

    name: Literal["rcnn"]
    proposals: ProposalsConfig = ProposalsConfig()
    warp_size: Annotated[int, Field(ge=32)] = 224  # the paper warps to 227 × 227 for AlexNet
    context: Annotated[int, Field(ge=0)] = 16  # pixels of image context around the box in the warped crop
    samples_per_image: Annotated[int, Field(gt=0)] = 64  # warped crops per training image (the paper: 128 per batch)
    positive_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.25  # of them with IoU ≥ 0.5 (fine-tuning)
    svm_negative_iou: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3  # SVM negatives overlap the class's boxes less
    hard_negatives: Annotated[int, Field(ge=0)] = 4096  # cache of hard negative features the SVMs keep training on
    regression_iou: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6  # proposals this close to a box train the regressor
    crops_per_pass: Annotated[int, Field(gt=0)] = 256  # inference: warped crops per CNN forward pass
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01  # on sigmoid(SVM margin)
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.3
    detections_per_img: Annotated[int, Field(gt=0)] = 100


class FastRCNNHead(Strict):
    """Fast R-CNN (Girshick 2015): one CNN pass per image, RoI max pooling of the proposals on one feature level,
    two fully connected layers, softmax classifier + class-specific box regression."""

    name: Literal["fast_rcnn"]
    proposals: ProposalsConfig = ProposalsConfig()
    min_size: Annotated[int, Field(gt=0)] = 600  # short side the images are resized to (the paper's scale)
    max_size: Annotated[int, Field(gt=0)] = 1000
    train_sizes: list[Annotated[int, Field(gt=0)]] = []  # multi-scale training: short sides picked at random
    pool_level: Annotated[int, Field(ge=0)] = 0  # which neck level the RoIs are pooled from (0 = finest)
    pool_size: list[Annotated[int, Field(gt=0)]] = [7, 7]  # RoI max pooling bins (height, width)
    roi_batch_size: Annotated[int, Field(gt=0)] = 64  # RoIs sampled per image (the paper: 128 per 2 images)
    positive_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.25  # of them with IoU ≥ 0.5
    box_head_dim: Annotated[int, Field(gt=0)] = 1024
    score_thresh: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    nms_thresh: Annotated[float, Field(gt=0.0, le=1.0)] = 0.3
    detections_per_img: Annotated[int, Field(gt=0)] = 100


class FCNHead(Strict):
    """FCN (Long et al. 2015): 1×1 convolutions to class scores on the backbone's levels, learnt transposed-
    convolution up-sampling (kernel 2s, padding s/2, bilinear at start) with skip fusion."""

    name: Literal["fcn"]
    variant: Literal["32s", "16s", "8s"] = "8s"  # 32s: last level only; 16s: + stride 16; 8s: + stride 8
    learn_upsampling: bool = True  # false: the transposed convolutions stay bilinear interpolation


class FastStyleHead(Strict):
    """Fast style transfer (Johnson et al. 2016): an image transformation network trained for one style with
    perceptual losses from a frozen VGG-16 (content at relu2_2, style Gram matrices at relu1_1 … relu5_1, TV)."""

    name: Literal["fast_style"]
    style_image: Path  # the one style this network learns
    style_size: Annotated[int, Field(gt=0)] = 256  # long side the style image is resized to
    loss_weights: str = "vgg16_hed.bsds"  # VGG-16 trunk of the loss network, from the weights catalogue
    channels: Annotated[int, Field(gt=0)] = 32  # width of the first layer (doubles twice)
    residual_blocks: Annotated[int, Field(ge=0)] = 5
    content_weight: Annotated[float, Field(ge=0)] = 1.0
    style_weight: Annotated[float, Field(ge=0)] = 1e5
    tv_weight: Annotated[float, Field(ge=0)] = 1e-4


HeadConfig = Annotated[ClassifierHead | FasterRCNNHead | SSDHead | YOLOHead | RCNNHead | FastRCNNHead | FCNHead
                       | FastStyleHead, Field(discriminator="name")]
HEADS_FOR_TASK: dict[str, set[str]] = {"classify": {"classifier"},
                                       "detect": {"faster_rcnn", "ssd", "yolo", "rcnn", "fast_rcnn"},
                                       "segment": {"fcn"}, "stylize": {"fast_style"}}


class ModelConfig(Strict):
    # the whole model's weights (backbone, neck and head: a COCO-pretrained detector); overrides backbone.weights.
    # Head layers that do not fit this pipeline's classes start fresh.
    weights: str | None = None
    backbone: BackboneConfig
    neck: NeckConfig
    head: HeadConfig


class TrainConfig(Strict):
    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0)]
    optimizer: Literal["sgd", "adamw"]
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: Annotated[float, Field(ge=0)]
    warmup_iters: Annotated[int, Field(ge=0)]
    backbone_lr_mult: Annotated[float, Field(ge=0)]
    grad_clip: Annotated[float, Field(ge=0)]
    amp: bool
    channels_last: bool = True
    ema: bool
    workers: Annotated[int, Field(ge=0)] | Literal["auto"]
    seed: int
    device: str
    time_limit: Annotated[float, Field(gt=0)] | None = None
    unfreeze_epoch: Annotated[int, Field(ge=0)] | None = None


BACKENDS = ("pytorch", "compile", "onnxruntime")  # inference backends (engine/runtime.py)
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
CLASSIFY_STATS = ("top1", "top5", "mean_class_accuracy")
SEGMENT_STATS = ("mIoU", "pixel_accuracy", "mean_class_accuracy", "fwIoU")
STYLIZE_STATS = ("perceptual_loss", "content_loss", "style_loss")
TASK_STATS = {"detect": COCO_STATS, "classify": CLASSIFY_STATS, "segment": SEGMENT_STATS, "stylize": STYLIZE_STATS}
LOWER_IS_BETTER = set(STYLIZE_STATS)


def loader_workers(setting: int | str) -> int:
    """`train.workers: auto` leaves two cores to the model: 0 on a 2-core machine (measured: two workers there
    made training epochs about 1.5× slower), up to 8 on big ones."""
    import os

    if setting != "auto":
        return int(setting)
    return min(8, max(0, (os.cpu_count() or 1) - 2))


class EvalConfig(Strict):
    batch_size: Annotated[int, Field(ge=1)]
    metric: Literal["auto", "coco_map", "miou", "top1"]
    interval: Annotated[int, Field(ge=1)] = 1
    best: Literal[("auto", *COCO_STATS, *CLASSIFY_STATS, "mIoU", "pixel_accuracy", "fwIoU", *STYLIZE_STATS)] = "auto"
    coco: Literal["faster", "pycocotools"] = "faster"  # COCO mAP by faster-coco-eval, or the pycocotools reference


class OutputConfig(Strict):
    dir: Path
    save_images: bool


class TTAConfig(Strict):
    """Test-time augmentation for detection in `cvpipe eval` and `cvpipe predict` (engine/tta.py); training's
    own evaluations stay plain."""

    enabled: bool = False
    flips: Literal["none", "hflip", "dihedral"] = "hflip"  # dihedral: the 8 mirrors and quarter turns
    scales: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = [1.0]  # × the head's input size
    fusion: Literal["wbf", "nms"] = "wbf"  # weighted boxes fusion (ensemble-boxes) or NMS over all views
    # boxes overlapping this much are one object; None: the head's nms_thresh (a lower one would merge boxes the
    # head's own NMS kept apart: YOLO's 0.6 with 0.55 here lost 0.05 AP50 on tree crowns)
    iou: Annotated[float, Field(gt=0, le=1)] | None = None


class VideoConfig(Strict):
    """`cvpipe video`: tracking and how long a dropped live stream is retried."""

    track: bool = False
    track_buffer: Annotated[int, Field(ge=1)] = 30  # frames a lost track is remembered
    track_match: Annotated[float, Field(gt=0, le=1)] = 0.8  # ByteTrack's minimum matching threshold
    reconnect_timeout: Annotated[float, Field(gt=0)] = 30.0  # seconds without a frame before a live run ends


class PipelineConfig(Strict):
    name: str  # the run folder under output.dir
    task: Task
    data: DataConfig
    augment: AugmentConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    output: OutputConfig
    video: VideoConfig = VideoConfig()
    tta: TTAConfig = TTAConfig()
    # where it came from, for FILE:LINE messages about problems found after loading (require_data)
    _source: str = PrivateAttr(default="pipeline")
    _lines: dict = PrivateAttr(default_factory=dict)
    _overridden: set = PrivateAttr(default_factory=set)
    _looked_in: dict = PrivateAttr(default_factory=dict)  # key path → the places a relative input was looked for

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        """A shared pipeline YAML must not be able to put its run folder outside output.dir."""
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise ValueError(f"{json.dumps(name)} names the run folder under output.dir: use letters, digits, "
                             "'_', '-' and '.' (no '/', no leading '.')")
        return name

    @property
    def source(self) -> str:
        """The pipeline file this was loaded from (a bundled one's path inside the package)."""
        return self._source

    @model_validator(mode="after")
    def _head_fits_task(self) -> PipelineConfig:
        allowed = HEADS_FOR_TASK.get(self.task, set())
        if self.model.head.name not in allowed:
            raise ValueError(
                f"model.head.name: head {self.model.head.name!r} does not do task {self.task!r}; "
                f"use one of: {', '.join(sorted(allowed)) or '(none available yet)'}"
            )
        if self.tta.enabled and self.task != "detect":
            raise ValueError(f"tta.enabled: test-time augmentation is for detection pipelines; this one is {self.task!r}")
        if self.task == "detect" and self.tta.iou is None:
            self.tta.iou = self.model.head.nms_thresh
        stats = TASK_STATS.get(self.task, ())
        if self.eval.best == "auto" and stats:
            self.eval.best = stats[0]
        elif self.eval.best != "auto" and self.eval.best not in stats:
            raise ValueError(f"eval.best: {self.eval.best!r} is not a {self.task} metric; use one of: {', '.join(stats)}")
        return self


# ----------------------------------------------------------------------------- YAML with line numbers


def _node_lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every key path in a composed YAML tree to its 1-based line."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*path, key_node.value)
            out[sub] = key_node.start_mark.line + 1
            _node_lines(value_node, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _node_lines(item, (*path, i), out)
    return out


def read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file with `safe_load`; return the data and a key-path → line map."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; name a pipeline YAML file (or a bundled pipeline: `cvpipe pipelines`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    duplicates = _duplicate_keys(node) if node is not None else []
    if duplicates:
        raise ConfigError(f"{path}: {len(duplicates)} key(s) given twice (YAML would keep only the last silently)",
                          [f"{path}:{line}: {key}: given again (first at line {first})" for key, first, line in duplicates])
    return data, (_node_lines(node) if node is not None else {})


def _duplicate_keys(node: yaml.Node, path: tuple = ()) -> list[tuple[str, int, int]]:
    """(dotted key, first line, repeated line) for every key a mapping repeats, at any depth."""
    found = []
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.value in first:
                found.append((_dotted((*path, key_node.value)), first[key_node.value], line))
            first.setdefault(key_node.value, line)
            found += _duplicate_keys(value_node, (*path, key_node.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, (*path, i))
    return found


def deep_merge(base: dict, top: dict) -> dict:
    """`top` over `base`, recursing into mappings; lists and scalars are replaced whole."""
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(item: str) -> tuple[tuple, Any]:
    """`model.head.score_thresh=0.3` → (('model','head','score_thresh'), 0.3); values parse as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    path = tuple(int(p) if p.isdigit() else p for p in key.strip().split("."))
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(data: dict, overrides: list[str]) -> list[tuple]:
    """Apply `--set` items in place; returns the key paths they touched."""
    touched = []
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {_dotted(path[: i + 1])} is not a mapping")
            node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {item}: cannot set {_dotted(path)}")
        touched.append(path)
    return touched


# ----------------------------------------------------------------------------- error messages


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _strip_union_tags(loc: tuple) -> tuple:
    """pydantic puts the discriminator value into the location of a tagged union; users never wrote it."""
    heads = {typing.get_args(m.model_fields["name"].annotation)[0] for m in _models_in(HeadConfig)}
    return tuple(p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "head" and p in heads))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _constraints(annotation: Any) -> list:
    """Ge/Le/... metadata inside container types such as list[list[Annotated[int, Field(gt=0)]]]."""
    found = []
    for arg in typing.get_args(annotation):
        found += list(arg.metadata) if hasattr(arg, "metadata") else _constraints(arg)
    return found


def _field_at(loc: tuple) -> tuple[list[type[BaseModel]], Any]:
    """Follow `loc` through the schema: (models owning the last key, FieldInfo of the last key or None)."""
    models: list[type[BaseModel]] = [PipelineConfig]
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        owners = [m for m in models if part in m.model_fields]
        tagged = [m for m in models if "name" in m.model_fields and part in typing.get_args(m.model_fields["name"].annotation)]
        if not owners and tagged:  # a tagged-union step (model.head.<faster_rcnn>.anchor_sizes)
            models = tagged
            continue
        if not owners:
            return models, None
        field = owners[0].model_fields[part]
        models = _models_in(field.annotation) or models
    return models, field


def _bounds(loc: tuple) -> str:
    _, field = _field_at(loc)
    if field is None:
        return ""
    metadata = list(field.metadata) + _constraints(field.annotation)
    lo = hi = None
    for m in metadata:
        if isinstance(m, Ge | Gt):
            lo = getattr(m, "ge", None) if isinstance(m, Ge) else f">{m.gt}"
        if isinstance(m, Le | Lt):
            hi = getattr(m, "le", None) if isinstance(m, Le) else f"<{m.lt}"
    if lo is not None and hi is not None:
        return f" {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}" if not str(lo).startswith(">") else f" {lo}"
    if hi is not None:
        return f" <= {hi}" if not str(hi).startswith("<") else f" {hi}"
    return ""


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


_EXPECTED = {
    "int": "int", "float": "number", "bool": "true or false", "string": "a string", "list": "a list",
    "dict": "a mapping", "model": "a mapping",
}


def _message(err: dict) -> str:
    kind, loc, value = err["type"], err["loc"], err.get("input")
    got = json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else type(value).__name__
    if kind == "extra_forbidden":
        models, _ = _field_at(loc[:-1])
        allowed = sorted({k for m in models for k in m.model_fields} - {loc[-1]})
        return f'unknown key "{loc[-1]}"' + _suggest(loc[-1], allowed)
    if kind == "missing":
        return "required key missing"
    if kind in ("literal_error", "union_tag_invalid"):
        expected = err.get("ctx", {}).get("expected") or err.get("ctx", {}).get("expected_tags", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        tag = err.get("ctx", {}).get("tag", value)
        return f"expected one of {' | '.join(options)}, got {json.dumps(tag)}" + _suggest(tag, options)
    base = kind.split("_")[0]
    if kind.startswith(("greater_than", "less_than")) or base in ("int", "float"):
        _, field = _field_at(loc)
        annotation = str(field.annotation) if field is not None else base
        of = "number" if "float" in annotation or base == "float" else "int"
        return f"expected {of}{_bounds(loc)}, got {got}"
    if base in _EXPECTED and kind.endswith(("_type", "_parsing")):
        return f"expected {_EXPECTED[base]}, got {got}"
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    return f"{err['msg']}, got {got}"


# ----------------------------------------------------------------------------- loading


def _problem(source: str, lines: dict[tuple, int], loc: tuple, message: str, overridden: set = frozenset()) -> str:
    line = None
    for n in range(len(loc), 0, -1):  # the deepest key the user actually wrote
        if loc[:n] in lines:
            line = lines[loc[:n]]
            break
    where = f"{source} (--set)" if loc in overridden else (f"{source}:{line}" if line else source)
    if message.startswith(_dotted(loc) + ":") or not loc:
        return f"{where}: {message}"
    return f"{where}: {_dotted(loc)}: {message}"


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, merge over defaults, apply `--set` overrides, validate. Raises ConfigError listing every problem.
    `path` may also name a bundled pipeline (`coco_ssd_mobilenet_v2`)."""
    path = find_pipeline(path)
    defaults, _ = read_yaml(DEFAULTS_FILE)
    user, lines = read_yaml(path)
    if not user and not overrides:
        raise ConfigError(f"{path}: the file is empty; a pipeline needs at least name, task, data and model "
                          "(`cvpipe pipelines` lists bundled ones to start from)")
    user = user or {}
    if not isinstance(user, dict):
        raise ConfigError(f"{path}:1: a pipeline must be a YAML mapping (name:, task:, data:, model: ...)")
    overridden = set(apply_overrides(user, list(overrides or [])))
    merged = deep_merge(defaults, user)
    source = str(path)
    try:
        config = PipelineConfig.model_validate(merged)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            loc = _strip_union_tags(tuple(err["loc"]))
            problems.append(_problem(source, lines, loc, _message(err), overridden))
        raise ConfigError(f"{path}: {len(problems)} problem(s)", problems) from None
    config._source, config._lines, config._overridden = source, lines, overridden
    _resolve_inputs(config, path)
    problems = [_problem(source, lines, loc, msg, overridden) for loc, msg in semantic_problems(config)]
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s)", problems)
    return config


def _resolve_inputs(config: PipelineConfig, path: Path) -> None:
    """Relative input paths → absolute: a value from the file against the file's folder, a `--set` value against
    the current folder; either then against the data folder (paths.resolve_input)."""
    def resolve(loc: tuple, value: Path) -> Path:
        base = Path.cwd() if loc in config._overridden else path.resolve().parent
        resolved, looked_in = resolve_input(value, base)
        config._looked_in[loc] = looked_in
        return resolved

    if config.data.root is not None:
        config.data.root = resolve(("data", "root"), config.data.root)
    head = config.model.head
    for name, field in type(head).model_fields.items():  # a head's input files (fast_style's style_image)
        if field.annotation is Path:
            setattr(head, name, resolve(("model", "head", name), getattr(head, name)))


def data_problems(config: PipelineConfig) -> list[str]:
    """What stops a command that reads the dataset (train, eval, augment preview): FILE:LINE messages."""
    root = config.data.root
    if root is None:
        message = "not set: this pipeline has no dataset; set data.root to one (train, eval and augment need it)"
    elif not root.exists():
        looked_in = config._looked_in.get(("data", "root"), [root])
        where = f"{looked_in[0]} does not exist" if len(looked_in) == 1 else \
            f"neither {looked_in[0]} nor {looked_in[1]} exists"
        message = f"{where}; fetch a bundled dataset with `cvpipe data fetch NAME` (no NAME: the list) or fix the path"
    else:
        return []
    return [_problem(config._source, config._lines, ("data", "root"), message, config._overridden)]


def require_data(config: PipelineConfig) -> None:
    problems = data_problems(config)
    if problems:
        raise ConfigError(f"{config._source}: the dataset is needed here", problems)


def backbone_levels(backbone: BackboneConfig) -> int:
    return len(backbone.feature_nodes) or len(backbone.out_indices)


def head_problems(model: ModelConfig) -> list[tuple[tuple, str]]:
    """Head settings that must agree with the neck: one size list per feature level, the neck the head needs."""
    head, neck = model.head, model.neck
    if head.name == "ssd":
        return _ssd_problems(head, neck, backbone_levels(model.backbone))
    if head.name in ("faster_rcnn", "yolo", "fast_rcnn") and neck.name == "ssd":
        return [(("model", "neck", "name"), f"{head.name} needs neck fpn, pan or none (ssd's extra blocks are for ssd)")]
    if head.name == "rcnn" and neck.name != "none":
        return [(("model", "neck", "name"), "rcnn pools the last backbone level of each warped crop: set neck none")]
    if head.name == "fast_rcnn":
        levels = backbone_levels(model.backbone) if neck.name in ("fpn", "pan") else 1
        if head.pool_level >= levels:
            return [(("model", "head", "pool_level"), f"{head.pool_level} is not a level of the neck's {levels} "
                     f"(0 … {levels - 1}; neck {neck.name}, model.backbone.out_indices {model.backbone.out_indices})")]
        if len(head.pool_size) != 2:
            return [(("model", "head", "pool_size"), f"expected [height, width], got {head.pool_size}")]
    if head.name == "fcn":
        needed = {"32s": 1, "16s": 2, "8s": 3}[head.variant]
        levels = backbone_levels(model.backbone)
        if neck.name != "none" or levels != needed:
            return [(("model", "backbone", "out_indices"),
                     f"fcn-{head.variant} fuses {needed} backbone level(s) (strides {[8, 16, 32][3 - needed:]}) with neck "
                     f"none; got {levels} level(s) {model.backbone.out_indices}, neck {neck.name}")]
    if head.name in ("yolo", "rcnn", "fast_rcnn", "fcn"):
        return []
    if head.name != "faster_rcnn" or head.anchor_sizes is None:
        return []
    levels = backbone_levels(model.backbone) if neck.name in ("fpn", "pan") else 1
    problems = []
    if len(head.anchor_sizes) != levels:
        problems.append((("model", "head", "anchor_sizes"),
                         f"{len(head.anchor_sizes)} levels of sizes given, but the neck gives {levels} feature levels "
                         f"(model.backbone.out_indices {model.backbone.out_indices}, neck {neck.name}); "
                         "give one list of sizes per level"))
    if len({len(sizes) for sizes in head.anchor_sizes}) > 1:  # one RPN head is shared by all levels
        problems.append((("model", "head", "anchor_sizes"),
                         f"every level needs the same number of sizes, got {head.anchor_sizes}; "
                         "e.g. [[12, 16], [24, 32], [48, 80]]"))
    return problems


def _ssd_problems(head: SSDHead, neck: NeckConfig, backbone_levels: int) -> list[tuple[tuple, str]]:
    if neck.name != "ssd":
        return [(("model", "neck", "name"), f"the ssd head needs neck ssd (extra down-sampling blocks), got {neck.name}")]
    levels = backbone_levels + len(neck.extra_blocks)
    problems = []
    if head.sizes is not None and len(head.sizes) != levels:
        problems.append((("model", "head", "sizes"),
                         f"{len(head.sizes)} levels of sizes given, but the neck gives {levels} "
                         f"({backbone_levels} backbone levels + {len(neck.extra_blocks)} extra blocks)"))
    if head.min_scale > head.max_scale:
        problems.append((("model", "head", "min_scale"), f"{head.min_scale} is above max_scale {head.max_scale}"))
    if len(head.box_weights) != 4:
        problems.append((("model", "head", "box_weights"), f"expected 4 numbers (x, y, w, h), got {head.box_weights}"))
    return problems


def semantic_problems(config: PipelineConfig) -> list[tuple[tuple, str]]:
    """Checks the schema cannot express: transforms that build, weights ids that exist. Whether the dataset
    exists is checked by the commands that read it (`data_problems`)."""
    import timm

    from cvpipe.data.augment import build_transform
    from cvpipe.models.weights import WeightsCatalog

    problems: list[tuple[tuple, str]] = head_problems(config.model)
    if config.tta.enabled and config.tta.scales != [1.0] and config.model.head.name not in ("faster_rcnn", "fast_rcnn"):
        problems.append((("tta", "scales"), f"the {config.model.head.name} head runs at one input size; scales other "
                         "than 1.0 need faster_rcnn or fast_rcnn (use tta.scales: [1.0] with flips)"))
    backbone = config.model.backbone.name
    if config.model.head.name != "fast_style" and not timm.is_model(backbone):  # fast_style has its own network
        problems.append((("model", "backbone", "name"),
                         f"unknown timm model {json.dumps(backbone)}{_suggest(backbone, timm.list_models())} "
                         "(`timm.list_models()` lists them)"))
    for split in ("train", "eval"):
        for i, entry in enumerate(getattr(config.augment, split)):
            try:
                build_transform(entry)
            except ValueError as e:
                problems.append((("augment", split, i), str(e)))
    for loc, weights_id in ((("model", "weights"), config.model.weights),
                            (("model", "backbone", "weights"), config.model.backbone.weights)):
        if weights_id is not None:
            catalog = WeightsCatalog.load()
            if weights_id not in catalog.entries:
                problems.append(
                    (loc, f"unknown weights id {json.dumps(weights_id)}{_suggest(weights_id, list(catalog.entries))} "
                     "(see `cvpipe weights list`)")
                )
    return problems
